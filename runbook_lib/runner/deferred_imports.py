"""Import-time work the runbook's own processes do not need up front.

``jsonschema`` (imported by chromadb, nbformat and papermill) imports ``rfc3987_syntax`` when it is installed (it
comes with JupyterLab's ``jsonschema[format-nongpl]``), and that module compiles a full Earley grammar for IRIs at
import: ~1 s, paid once by the runner and once more by the kernel, before any work starts. The runner and the
kernel launcher call :func:`defer_rfc3987_syntax` first thing: the module is then loaded the first time an IRI is
actually checked (never, in a run), with the same behaviour. The app layer never calls this: an app's imports are
its own.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

_NAME = "rfc3987_syntax"


def _real() -> types.ModuleType:
    stub = sys.modules.get(_NAME)
    if stub is not None and getattr(stub, "__runbook_deferred__", False):
        del sys.modules[_NAME]
    try:
        return importlib.import_module(_NAME)
    except BaseException:
        if stub is not None:
            sys.modules.setdefault(_NAME, stub)
        raise


def defer_rfc3987_syntax() -> bool:
    """Stand in for ``rfc3987_syntax`` until it is used; True when the stand-in was installed."""
    if _NAME in sys.modules or importlib.util.find_spec(_NAME) is None:
        return False
    stub = types.ModuleType(_NAME, "rfc3987_syntax, loaded on first use (runbook_lib.runner.deferred_imports)")

    def is_valid_syntax(term: str, value: str) -> Any:
        return _real().is_valid_syntax(term, value)

    def __getattr__(name: str) -> Any:  # anything else: load the real module (not for the import system's probes)
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(_real(), name)

    stub.is_valid_syntax = is_valid_syntax  # type: ignore[attr-defined]
    stub.__getattr__ = __getattr__  # type: ignore[method-assign]
    stub.__runbook_deferred__ = True  # type: ignore[attr-defined]
    sys.modules[_NAME] = stub
    return True

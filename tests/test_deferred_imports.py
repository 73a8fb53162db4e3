"""The runner's and kernel's deferral of ``rfc3987_syntax`` (an Earley grammar compiled at import, ~1 s): nothing
compiles until an IRI is checked, and the check then behaves as without the deferral. Fresh interpreters."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _run(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip()


def test_jsonschema_and_chromadb_import_without_compiling_the_iri_grammar() -> None:
    pytest.importorskip("rfc3987_syntax")
    out = _run(
        """
        import sys
        from runbook_lib.runner.deferred_imports import defer_rfc3987_syntax
        assert defer_rfc3987_syntax()
        import jsonschema, chromadb, papermill
        print("rfc3987_syntax.syntax_helpers" in sys.modules)
        """
    )
    assert out == "False"


def test_an_iri_check_loads_it_and_answers_as_before() -> None:
    pytest.importorskip("rfc3987_syntax")
    check = """
        import jsonschema
        checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
        print([checker.conforms(v, "iri") for v in ("https://ex.example/ä?q=1", "not an iri", "http://[::1")])
        """
    plain = _run(check)
    deferred = _run(
        "from runbook_lib.runner.deferred_imports import defer_rfc3987_syntax\ndefer_rfc3987_syntax()\n"
        + textwrap.dedent(check)
    )
    assert deferred == plain and "True" in plain and "False" in plain

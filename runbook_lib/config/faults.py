"""Faults injected at named points, for the crash-safety tests (``tests/test_crash_safety.py``).

``RUNBOOK_FAULT=<point>`` ends the process at that point with ``os._exit`` (:data:`FAULT_EXIT`), as a kill would:
no ``finally`` or ``except`` runs. ``RUNBOOK_FAULT=<point>!raise`` raises an ``OSError`` there instead (a rename or a
write that fails). In the same process, :data:`ACTIONS` runs something at a point (an app's write at the exact
moment a race needs it). Unset and empty, :func:`fault_point` does nothing.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

FAULT_VARIABLE = "RUNBOOK_FAULT"
#: The exit status of a process ended by an injected fault.
FAULT_EXIT = 86
#: point -> what to run there, in this process (tests only).
ACTIONS: dict[str, Callable[[], None]] = {}


def fault_point(name: str) -> None:
    """Run this point's action, then end the process (or raise ``OSError``) when ``RUNBOOK_FAULT`` names it."""
    action = ACTIONS.get(name)
    if action is not None:
        action()
    wanted = os.environ.get(FAULT_VARIABLE)
    if not wanted:
        return
    if wanted == name:
        os._exit(FAULT_EXIT)
    if wanted == f"{name}!raise":
        raise OSError(errno.EIO, f"injected fault at {name}")

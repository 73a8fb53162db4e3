"""Scratch folders (``runbook-scratch-*``) that are never left behind.

A persistent directory is read from a scratch copy in ``RUNBOOK_SCRATCH_DIR`` (default: the system temp dir). Each
scratch folder holds an owner file with the PID (and, where the system tells, the start time) of the process that
made it; a folder is removed by its owner when the source closes, at interpreter exit if it was never closed, and
otherwise -- after a ``kill -9`` or a crash -- by the next run, which removes every ``runbook-scratch-*`` and
``runbook-kernel-*`` (the runner's kernelspec folders) whose owner is dead. A folder without an owner file (made by
an older version, or a runner that does not mark its folders) is removed once it is older than
:data:`UNMARKED_MAX_AGE_S`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

SCRATCH_PREFIX = "runbook-scratch-"
KERNEL_PREFIX = "runbook-kernel-"
PREFIXES = (SCRATCH_PREFIX, KERNEL_PREFIX)
OWNER_FILE = ".runbook-owner.json"
#: A folder of ours with no (readable) owner file is removed once it is this old (seconds): one day.
UNMARKED_MAX_AGE_S = 24 * 3600

#: Scratch folders this process made and has not removed yet (removed at exit if still there).
_OWNED: set[Path] = set()


def default_root() -> Path:
    return Path(tempfile.gettempdir())


def _start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (Linux ``/proc``), to tell a reused PID apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    try:  # the command name (field 2) may hold spaces and parentheses: split after its closing one
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (IndexError, ValueError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """True when process ``pid`` runs (and, when ``start_ticks`` is known, is the same process, not a reused PID)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    except OSError:  # pragma: no cover - e.g. signals unsupported: assume alive, never delete by mistake
        return True
    if _is_zombie(pid):
        return False
    if start_ticks is not None:
        now = _start_ticks(pid)
        if now is not None and now != start_ticks:
            return False
    return True


def claim(folder: Path) -> None:
    """Write the owner file (this process) into ``folder``, atomically."""
    pid = os.getpid()
    data = {"pid": pid, "start_ticks": _start_ticks(pid), "host": socket.gethostname(), "created": time.time()}
    tmp = folder / f"{OWNER_FILE}.{pid}.tmp"
    tmp.write_text(json.dumps(data))
    os.replace(tmp, folder / OWNER_FILE)


def make_scratch(root: Path) -> Path:
    """A new ``runbook-scratch-*`` folder under ``root``, claimed by this process (removed at exit if left open)."""
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=root))
    try:
        claim(folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _OWNED.add(folder)
    return folder


def remove_scratch(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    _OWNED.discard(folder)


@atexit.register
def _remove_owned() -> None:  # pragma: no cover - runs at interpreter exit
    for folder in list(_OWNED):
        remove_scratch(folder)


def owner_of(folder: Path) -> dict[str, object] | None:
    """The owner file's content, or None when there is none or it cannot be read."""
    try:
        data = json.loads((folder / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def is_stale(folder: Path, *, now: float | None = None) -> bool:
    """True when ``folder``'s owner process is dead (or, with no owner file, the folder is older than a day).
    A folder owned by a process on another host (a shared temp dir) is never stale here."""
    owner = owner_of(folder)
    if owner is None:
        try:
            age = (now if now is not None else time.time()) - folder.stat().st_mtime
        except OSError:
            return False
        return age > UNMARKED_MAX_AGE_S
    if owner.get("host") not in (None, socket.gethostname()):
        return False
    pid = int(owner["pid"])  # type: ignore[call-overload]
    if pid == os.getpid():
        return False
    ticks = owner.get("start_ticks")
    return not pid_alive(pid, ticks if isinstance(ticks, int) else None)


def sweep_stale(*roots: Path) -> list[Path]:
    """Remove every ``runbook-scratch-*`` / ``runbook-kernel-*`` folder under ``roots`` whose owner is dead; the
    folders removed. Never raises: a folder that cannot be inspected or removed is left alone."""
    removed: list[Path] = []
    for root in dict.fromkeys(roots):
        try:
            candidates = [p for p in root.iterdir() if p.name.startswith(PREFIXES) and p.is_dir()]
        except OSError:
            continue
        for folder in candidates:
            with contextlib.suppress(OSError):
                if folder.is_symlink() or not is_stale(folder):
                    continue
                shutil.rmtree(folder)
                removed.append(folder)
                log.info("removed stale scratch folder %s (its process is gone)", folder)
    return removed

"""Ctrl-C while the runner executes a step's notebook: stop the step the way Jupyter's stop button does.

The kernel runs in its own session (jupyter_client starts it so), so a terminal's Ctrl-C reaches only the runner.
The first SIGINT is passed on to the kernel (the running cell raises ``KeyboardInterrupt``; ``Step.execute`` files
the step's result as ``interrupted``) and no further cell starts; a second one kills the kernel. Either way
papermill saves the notebook as far as it ran, and the runner files it with status ``interrupted``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

#: the exit code of a step stopped by Ctrl-C (128 + SIGINT, what a shell reports)
EXIT_INTERRUPTED = 130


class StepInterrupted(Exception):
    """Raised by nbclient's ``on_cell_start`` hook: the user interrupted the step, run no further cell."""


class Interrupt:
    """The runner's SIGINT handler for one step; ``pidfile`` is where the kernel launcher writes its pid."""

    def __init__(self, pidfile: Path) -> None:
        self.pidfile = pidfile
        self.count = 0

    @property
    def requested(self) -> bool:
        return self.count > 0

    def kernel_pid(self) -> int | None:
        """The kernel's pid, while that process is still this step's kernel (a pid can be reused)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_kernel(pid) else None

    def _is_kernel(self, pid: int) -> bool:
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except FileNotFoundError:
            if Path("/proc/self").exists():
                return False  # the process is gone
            try:  # no /proc: the kernel leads its own session, so its process group is its pid
                return os.getpgid(pid) == pid
            except OSError:
                return False
        except OSError:
            return False
        return f"RUNBOOK_KERNEL_PIDFILE={self.pidfile}".encode() in env

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1
        pid = self.kernel_pid()
        if pid is None:  # the kernel is not up yet: no cell will start
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self.count == 1:
                os.kill(pid, signal.SIGINT)
            else:  # the kernel did not stop: end it (and anything it started) now
                os.killpg(pid, signal.SIGKILL)

    def stop_before_next_cell(self, **_: Any) -> None:
        """nbclient's ``on_cell_start`` hook."""
        if self.requested:
            raise StepInterrupted

    def kill_kernel(self) -> None:
        pid = self.kernel_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupt]:
        """Handle SIGINT with this object for the block (only possible in the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

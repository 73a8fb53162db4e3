"""The kernel the runner starts: ipykernel, with the process's own stderr (kernel warnings, ZMQ noise at shutdown)
appended to the step's log file named by ``RUNBOOK_KERNEL_LOG``, and its pid written to ``RUNBOOK_KERNEL_PIDFILE``
(so the runner can pass a Ctrl-C on to it). Cell output still goes to the notebook."""

from __future__ import annotations

import os


def main() -> None:
    log = os.environ.get("RUNBOOK_KERNEL_LOG")
    if log:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
    pidfile = os.environ.get("RUNBOOK_KERNEL_PIDFILE")
    if pidfile:
        with open(pidfile, "w", encoding="ascii") as fh:
            fh.write(str(os.getpid()))
    from ipykernel import kernelapp

    kernelapp.launch_new_instance()


if __name__ == "__main__":
    main()

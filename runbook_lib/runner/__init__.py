"""The ``runbook`` command's side, outside the kernel: ``execute`` (papermill execution of a step's notebook into
the run folder, with its HTML render), ``kernel_launcher``, ``interrupt`` (Ctrl-C and SIGTERM while a step runs)
and ``cleanup`` (removing old backups and run leftovers)."""

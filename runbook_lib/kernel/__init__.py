"""What runs inside a step's kernel: ``step`` (``begin``/``execute``: parameters, settings, the run folder, the
filed result) and ``display`` (progress bars and charts in JupyterLab, papermill and a terminal)."""

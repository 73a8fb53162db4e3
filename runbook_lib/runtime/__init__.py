"""Running steps: ``step`` (``begin``/``execute``: parameters, settings, the run folder, the filed result),
``display`` (progress bars and charts in JupyterLab, papermill and a terminal) and ``runner`` (papermill
execution of a step's notebook into the run folder, with its HTML render)."""

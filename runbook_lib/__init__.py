"""ChromaDB -> Qdrant migration runbook: the library under the notebooks.

Each folder is one role, and imports only point down this list (``tests/test_imports.py`` checks it):

- ``errors``: the one exception hierarchy, each error one sentence with an exit code.
- ``config/``: settings from the environment, every step's parameter model, paths.
- ``core/``: pure rules: the SPEC mapping, Chroma ``where`` translation, value comparison, the plan.
- ``source/``: reading ChromaDB (directory or server), its files, and the checksummed backup.
- ``target/``: writing and reading Qdrant (server or embedded local mode).
- ``app/``: ``VectorDBClient``, what a production app imports (chromadb and qdrant-client only).
- ``state/``: the run folder: manifest, checkpoint, secret scrubbing.
- ``runtime/``: what a notebook calls first (``begin``/``execute``), display helpers, the papermill runner.
- ``steps/``: dry run, migrate, verify, monitor, rollback, cleanup: engine, result data, report and charts.
- ``cli``: the ``runbook`` command.
"""

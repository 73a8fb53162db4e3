"""What a run keeps on disk under ``outputs/<run_id>/``: ``run`` (the folder, its manifest and results, atomic
JSON writes under a file lock), ``checkpoint`` (resumable progress) and ``scrub`` (secrets kept out of files)."""

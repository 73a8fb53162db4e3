"""The steps, one folder each: ``dry_run``, ``migrate``, ``verify``, ``monitor``, ``rollback``, ``sync``. A step
folder separates the engine (the work), the result (data with one JSON form) and the report and charts (what the
notebook shows)."""

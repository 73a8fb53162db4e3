"""The migration checkpoint ``outputs/<run_id>/state/migrate_checkpoint.json``.

Written by the migrate step after every batch; read by verify, monitor and rollback to know what the
run migrated (collections, target names, aliases, the backup). One reader, so they cannot drift.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from runbook_lib.errors import ConfigError
from runbook_lib.state.run import Run

CHECKPOINT = "migrate_checkpoint.json"


def checkpoint_path(run: Run) -> Path:
    return run.dir / "state" / CHECKPOINT


def read_checkpoint(run: Run) -> dict[str, Any] | None:
    """The run's migration state (``{"backup_path", "target", "collections": {...}}``), or None when the
    run has no migration. A damaged file is a :class:`ConfigError`."""
    return load_checkpoint(checkpoint_path(run))


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The one loader of a checkpoint file (None when there is none; a damaged file is a ConfigError)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"The migration checkpoint {path} cannot be read ({exc}): the run folder is damaged."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("collections", {}), dict):
        raise ConfigError(f"The migration checkpoint {path} has no 'collections' mapping: the run folder is damaged.")
    data.setdefault("collections", {})
    return data


def run_layout_params(checkpoint: dict[str, Any] | None) -> tuple[str, str]:
    """``(payload_layout, null_documents)`` the run migrated with (runs before layouts: the SPEC layout)."""
    data = checkpoint or {}
    return str(data.get("payload_layout") or "runbook"), str(data.get("null_documents") or "refuse")


class Checkpoint:
    """The migration's state in ``state/migrate_checkpoint.json``, written atomically after each batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = load_checkpoint(path) or {"collections": {}}
        self._lock = threading.Lock()

    def save(self) -> None:
        with self._lock:
            tmp = self.path.with_name(self.path.name + ".tmp")
            with open(tmp, "w", encoding="utf-8") as fh:  # on disk before the rename: a crash keeps old or new
                fh.write(json.dumps(self.data, indent=2))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)

    def entry(self, name: str) -> dict[str, Any]:
        return self.data["collections"].setdefault(name, {"status": "pending", "records_done": 0})

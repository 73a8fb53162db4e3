"""The rollback plan's vocabulary: :class:`Action` (one line of the plan) and its ``op`` values, and
:func:`read_run_checkpoint` (what the migrate step of the run being undone recorded, where every plan starts).

The ChromaDB and Qdrant lines of the plan are built in :mod:`runbook_lib.steps.rollback.chroma_restore` and
:mod:`runbook_lib.steps.rollback.qdrant_cleanup`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from runbook_lib.errors import ConfigError
from runbook_lib.state.checkpoint import checkpoint_path, read_checkpoint
from runbook_lib.state.ledger import LEDGER
from runbook_lib.state.run import Run

# ``Action.op`` values.
RESTORE_DIR = "restore directory"
KEEP_DIR = "keep directory"
BRING_BACK = "bring back from Qdrant"
DELETE_COLLECTION = "delete collection"
PUT_BACK_ALIAS = "put back alias"
DELETE_ALIAS = "delete alias"
LEAVE = "leave untouched"
SKIP = "skip"
WRITE_ENV = "write settings"
_CHANGES = (RESTORE_DIR, BRING_BACK, DELETE_COLLECTION, PUT_BACK_ALIAS, DELETE_ALIAS)


@dataclass
class Action:
    """One line of the plan: what happens to which object, and (after confirm) whether it happened."""

    system: str  # "ChromaDB" | "Qdrant" | "app"
    op: str
    name: str
    detail: str
    to: str | None = None  # PUT_BACK_ALIAS: the collection the alias goes back to
    status: str = "planned"

    @property
    def is_change(self) -> bool:
        return self.op in _CHANGES

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_run_checkpoint(run: Run, backup_dir: Path | None = None) -> dict[str, Any]:
    """The migrate step's checkpoint of ``run``; :class:`ConfigError` when the run has no migration, or when the
    checkpoint is missing although the run migrated (its ledger, its backup ``backup_dir`` or a finished migrate
    step is there): a rollback without it would bring nothing back and still point the app at ChromaDB."""
    data = read_checkpoint(run)
    if data is not None:
        return data
    migrate = run.manifest().get("steps", {}).get("migrate")
    if migrate is None:
        raise ConfigError(
            f"Run {run.run_id} has no migrate step, so there is nothing to roll back: pass the run id of the "
            "migration to undo (`runbook runs` lists the runs)."
        )
    evidence = [
        what
        for what, present in (
            (f"its ledger {run.dir / 'state' / LEDGER}", (run.dir / "state" / LEDGER).is_file()),
            (f"its backup {backup_dir}", backup_dir is not None and backup_dir.is_dir()),
            ("a finished migrate step", migrate.get("status") == "ok"),
        )
        if present
    ]
    if evidence:
        raise ConfigError(
            f"The migration checkpoint {checkpoint_path(run)} of run {run.run_id} is missing although the run "
            f"migrated ({', '.join(evidence)}): without it the rollback cannot tell what to bring back from Qdrant "
            "or remove; restore the run folder from a copy, then run the rollback again (nothing was changed)."
        )
    return {"collections": {}}

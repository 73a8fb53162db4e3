"""The rollback plan, as data: what :func:`~runbook_lib.steps.rollback.planner.build_plan` decides (reading only)
and :func:`~runbook_lib.steps.rollback.executor.carry_out` carries out, move by move, in order.

* :class:`Action`: one line of the plan (shown, and filed as ``05_rollback.json``'s ``plan``), and its ``op`` values;
* the moves, in the order they are carried out: :class:`ChromaPlan` (keep the live directory, or restore it from the
  backup), :class:`BringBack` (Qdrant's changes since the last sync, back into ChromaDB), :class:`QdrantCleanup`
  (alias changes, then the :class:`Deletion` of each collection the run created), :class:`AppSettings`
  (``rollback.env``); :class:`RollbackPlan` holds them;
* :func:`read_run_checkpoint`: what the migrate step of the run being undone recorded, where every plan starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from runbook_lib.chroma.backup import Backup
from runbook_lib.errors import ConfigError
from runbook_lib.state.checkpoint import checkpoint_path, read_checkpoint
from runbook_lib.state.ledger import LEDGER
from runbook_lib.state.run import Run
from runbook_lib.steps.sync.result import SyncResult

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


# --- the moves -----------------------------------------------------------------------------------
@dataclass
class ChromaPlan:
    """The ChromaDB move: the live directory is kept, restored from the run's verified backup, or not touched."""

    mode: str  # "keep" (the live directory stays) | "restore" (swap in the backup) | "skipped"
    note: str
    persist_dir: Path | None = None
    backup: Backup | None = None
    live_differences: list[str] = field(default_factory=list)
    backup_counts: dict[str, int] = field(default_factory=dict)
    damage: str | None = None  # why the live directory cannot be kept (restore because damaged)

    @property
    def restore(self) -> bool:
        return self.mode == "restore"

    @property
    def touched(self) -> bool:
        """Whether ChromaDB is part of this rollback at all (a kept or restored directory)."""
        return self.mode != "skipped"

    def action(self) -> Action:
        """The plan's line for ChromaDB."""
        if self.mode == "restore":
            assert self.backup is not None and self.persist_dir is not None
            return Action("ChromaDB", RESTORE_DIR, str(self.persist_dir), f"from {self.backup.path}: {self.note}")
        if self.mode == "keep":
            return Action("ChromaDB", KEEP_DIR, str(self.persist_dir), self.note, status="kept")
        return Action("ChromaDB", SKIP, "ChromaDB", self.note, status="skipped")

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "note": self.note,
            "persist_dir": str(self.persist_dir) if self.persist_dir else None,
            "backup": self.backup.summary() if self.backup else None,
            "live_differences": self.live_differences[:50],
            "backup_counts": self.backup_counts,
            "damage": self.damage,
        }


@dataclass
class BringBack:
    """The reverse sync of ``collections`` (source names) that brings Qdrant's changes back into ChromaDB; it runs
    (and re-plans, so a conflict that appeared since still stops it) even when its plan found nothing."""

    collections: list[str]
    #: The directory is restored first: the sync writes Qdrant's state over the backup (``on_conflict="target"``).
    restore: bool
    on_conflict: str
    #: Its plan (nothing written).
    planned: SyncResult
    action: Action


@dataclass(frozen=True)
class Deletion:
    """A Qdrant collection the run created, deleted by the cleanup: right before, its points are exported and, when
    its changes were brought back (``ledger_checked``), compared with the run's ledger for ``source``."""

    collection: str
    source: str | None
    ledger_checked: bool


@dataclass
class QdrantCleanup:
    """The Qdrant move: its lines (alias changes first, then collections) and the state they were planned from."""

    actions: list[Action]
    #: ``{"collections", "aliases"}`` when planned (None: an embedded target with no storage yet).
    state_before: dict[str, Any] | None = None
    #: Qdrant collection -> its deletion, for each ``DELETE_COLLECTION`` line.
    deletions: dict[str, Deletion] = field(default_factory=dict)
    #: Whether the executor opens Qdrant (``remove_qdrant`` and storage exists); else the lines are shown only.
    carried_out: bool = False

    @property
    def doomed(self) -> list[str]:
        """The collections the cleanup deletes, in order."""
        return [a.name for a in self.actions if a.op == DELETE_COLLECTION]

    def plan_deletions(self, checkpoint: dict[str, Any], brought_back: list[str]) -> None:
        """Each collection the cleanup deletes, with the Chroma collection it holds (from the run's
        ``checkpoint``); one whose changes are brought back (``brought_back``: source names) is compared with the
        ledger right before its deletion."""
        states = checkpoint.get("collections", {})
        source_of = {st["target"]: name for name, st in states.items() if st.get("target")}
        checked = {states[name]["target"] for name in brought_back}
        self.deletions = {
            name: Deletion(name, source_of.get(name), ledger_checked=name in checked and name in source_of)
            for name in self.doomed
        }


@dataclass
class AppSettings:
    """The app move: ``rollback.env`` (the non-secret settings that point the app back at ChromaDB)."""

    env: dict[str, str]
    path: Path
    action: Action


@dataclass
class RollbackPlan:
    """Everything the rollback will do, decided before anything changes; shown as :attr:`actions`."""

    run_id: str
    checkpoint: dict[str, Any]
    chroma: ChromaPlan
    chroma_action: Action
    bring_back: BringBack | None
    qdrant: QdrantCleanup | None
    app: AppSettings
    warnings: list[str] = field(default_factory=list)

    @property
    def blocked(self) -> list[str]:
        """Conflicts that stop the rollback before it changes anything."""
        return list(self.bring_back.planned.blocked) if self.bring_back else []

    @property
    def moves(self) -> list[ChromaPlan | BringBack | QdrantCleanup | AppSettings]:
        """What is carried out, in order."""
        optional = [m for m in (self.bring_back, self.qdrant) if m is not None]
        return [self.chroma, *optional, self.app]

    @property
    def actions(self) -> list[Action]:
        """The plan's lines, in the order they are carried out."""
        back = [self.bring_back.action] if self.bring_back else []
        qdrant = self.qdrant.actions if self.qdrant else []
        return [self.chroma_action, *back, *qdrant, self.app.action]


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

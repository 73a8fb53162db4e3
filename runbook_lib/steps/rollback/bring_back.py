"""Bringing Qdrant's changes since the run last synchronised back into ChromaDB, before the rollback removes
anything from Qdrant: a reverse sync (:func:`runbook_lib.steps.sync.engine.run_sync`).

* the live directory is kept: ``keep_other_side=True`` (ChromaDB's own changes since the last sync stay) and the
  user's ``on_conflict`` decides only the records changed on both sides (``stop``: the rollback stops before
  changing anything and names them);
* the directory was restored from the backup (missing, damaged, or asked for): the sync runs on the restored
  directory with ``on_conflict="target"`` and ``keep_other_side=False``: Qdrant holds the newest complete state
  (the migration's copy, every forward sync since, and the app's writes after cutover), so everything where the
  older backup differs from it is written from Qdrant.

The plan (``confirm=False``) reads a copy of the live directory, or of the backup's data when the directory is to
be restored, kept in its own folder of the run's ``state/`` and removed afterwards (the last sync's copy, which
verify reads, is left as it is).
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any

from runbook_lib.chroma.backup import Backup
from runbook_lib.kernel.step import Step
from runbook_lib.steps.rollback.plan import BRING_BACK, SKIP, Action
from runbook_lib.steps.sync.diff import KINDS
from runbook_lib.steps.sync.engine import SyncOptions, run_sync
from runbook_lib.steps.sync.result import SyncResult

#: The run's ``state/`` folder the plan's copy of ChromaDB is read from (removed after the plan).
PLAN_SNAPSHOT = "rollback_plan_snapshot"


def sync_names(checkpoint: dict[str, Any], existing: set[str], warnings: list[str]) -> list[str]:
    """Collections whose migration finished (only those were ever cut over) and whose Qdrant collection exists."""
    names = []
    for name, state in sorted(checkpoint.get("collections", {}).items()):
        target = state.get("target")
        if state.get("status") != "done" or not target:
            continue
        if target not in existing:
            warnings.append(
                f"Qdrant collection {target!r} (of {name!r}) no longer exists, so nothing of it can be brought back "
                "into ChromaDB (removed by an earlier rollback, or by hand)."
            )
            continue
        names.append(name)
    return names


def _options(names: list[str], *, restore: bool, on_conflict: str, confirm: bool, snapshot: str | None) -> SyncOptions:
    extra: dict[str, Any] = {"snapshot": snapshot} if snapshot else {}
    return SyncOptions(
        direction="reverse",
        on_conflict="target" if restore else on_conflict,
        confirm=confirm,
        collections=tuple(names),
        keep_other_side=not restore,
        **extra,
    )


def plan_bring_back(
    step: Step, names: list[str], *, restore: bool, backup: Backup | None, on_conflict: str
) -> SyncResult:
    """The reverse sync's plan (nothing written): against the live directory, or the backup's data when the
    directory is to be restored from it."""
    planned = step
    if restore and backup is not None:
        chroma = step.settings.chroma.model_copy(update={"persist_dir": backup.data_dir})
        planned = dataclasses.replace(step, settings=step.settings.model_copy(update={"chroma": chroma}))
    try:
        return run_sync(
            planned, _options(names, restore=restore, on_conflict=on_conflict, confirm=False, snapshot=PLAN_SNAPSHOT)
        )
    finally:
        shutil.rmtree(step.run.state_dir / PLAN_SNAPSHOT, ignore_errors=True)
        shutil.rmtree(step.run.state_dir / f"{PLAN_SNAPSHOT}.partial", ignore_errors=True)


def bring_back(step: Step, names: list[str], *, restore: bool, on_conflict: str) -> SyncResult:
    """The reverse sync itself (re-plans first, so a conflict that appeared since the plan still stops it)."""
    return run_sync(step, _options(names, restore=restore, on_conflict=on_conflict, confirm=True, snapshot=None))


def side_counts(sync: SyncResult, side: str) -> dict[str, int]:
    """Added/changed/deleted since the last sync on one side (``qdrant_changes`` or ``source_changes``)."""
    out = dict.fromkeys(KINDS, 0)
    for c in sync.collections:
        for kind in KINDS:
            out[kind] += int(c[side][kind])
    return out


def bring_back_action(sync: SyncResult, *, restore: bool, on_conflict: str, where: str) -> Action:
    """The plan's line for the reverse sync."""
    q = side_counts(sync, "qdrant_changes")
    own = side_counts(sync, "source_changes")
    conflicts = sync.totals()["conflicts"]
    n_q, n_own = sum(q.values()), sum(own.values())
    what = f"{n_q} record(s) changed in Qdrant since the last sync ({q['added']} added, {q['changed']} changed, "
    what += f"{q['deleted']} deleted)"
    if restore:
        detail = (
            f"after the restore: {what} come back, and {n_own} record(s) where the older backup differs from the "
            "last sync are written from Qdrant (on_conflict=target: Qdrant holds the newest complete state)"
        )
        if not n_q and not n_own and not conflicts:
            return Action(
                "ChromaDB", SKIP, where, "after the restore: nothing to bring back from Qdrant", status="skipped"
            )
    else:
        if not n_q and not conflicts:
            return Action(
                "ChromaDB",
                SKIP,
                where,
                f"nothing changed in Qdrant since the last sync; ChromaDB's own {n_own} change(s) stay",
                status="skipped",
            )
        detail = f"{what} come back; ChromaDB's own {n_own} change(s) since then stay"
        if conflicts:
            winner = {"source": "ChromaDB's version stays", "target": "Qdrant's version is written"}
            detail += f"; {conflicts} conflict(s): {winner.get(on_conflict, 'the rollback stops')}"
    return Action("ChromaDB", BRING_BACK, where, detail)

"""The one executor of the rollback: :func:`carry_out` runs a confirmed
:class:`~runbook_lib.steps.rollback.plan.RollbackPlan`'s moves in order, each recorded before the next change so a
rerun knows where it stands:

1. **ChromaDB** (a restore only): the backup is staged and verified beside the live directory, then swapped in (the
   previous one kept as ``<dir>.old-<time>``); the ledger's write sequences are forgotten (another directory).
2. **Bring back** Qdrant's changes (the reverse sync re-plans first: a conflict that appeared since stops here,
   before anything else changes); after a restore, the intermediate directory the sync set aside is dropped when it
   is the backup's byte-identical copy.
3. **Qdrant**: the checkpoint records (``rollback.brought_back``) that the changes came back, then each action runs
   in order (alias changes, then deletions); right before a deletion the collection is exported, re-checked against
   the ledger when its changes were brought back, and recorded as begun (``rollback.cleanup_started``). A failed
   action is recorded and the others still run.
4. **The app**: ``rollback.env`` is written.

Then ChromaDB's health is checked (and its counts compared with the backup when that means something).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook_lib.chroma import files as chroma_files
from runbook_lib.core.layouts import Layout, get_layout
from runbook_lib.errors import BackupError, RunbookError, TargetError
from runbook_lib.kernel.step import Step
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.state.checkpoint import Checkpoint, checkpoint_path, run_layout_params
from runbook_lib.state.ledger import LEDGER, Ledger
from runbook_lib.state.run import Run, utc_now, write_text_scrubbed
from runbook_lib.steps.rollback.app_env import render_env
from runbook_lib.steps.rollback.bring_back import bring_back
from runbook_lib.steps.rollback.chroma_restore import chroma_health, count_rows, stage_restore, swap_in
from runbook_lib.steps.rollback.export import export_path, export_points
from runbook_lib.steps.rollback.plan import (
    BRING_BACK,
    AppSettings,
    BringBack,
    ChromaPlan,
    Deletion,
    QdrantCleanup,
    RollbackPlan,
)
from runbook_lib.steps.rollback.qdrant_cleanup import apply_action, open_target, qdrant_state
from runbook_lib.steps.rollback.result import RollbackResult

log = logging.getLogger(__name__)


@dataclass
class Execution:
    """What the executor carries from one move to the next."""

    step: Step
    plan: RollbackPlan
    result: RollbackResult
    #: Source collection -> ids of the conflicts the bring-back left in ChromaDB's favour (they may differ).
    kept_conflicts: dict[str, list[str]] = field(default_factory=dict)


def carry_out(step: Step, plan: RollbackPlan, result: RollbackResult) -> None:
    """Carry the plan out, move by move in its order, then check ChromaDB; ``result`` records what happened."""
    execution = Execution(step, plan, result)
    for move in plan.moves:
        if not _MOVES[type(move)](execution, move):
            return
    _check_chroma(execution)
    result.ok = not result.errors


def _restore(execution: Execution, plan: ChromaPlan) -> bool:
    """Stage the backup (copy + verify) beside the live directory, then swap it in; the old one is kept."""
    if not plan.restore:
        return True
    assert plan.backup is not None and plan.persist_dir is not None
    result = execution.result
    staging = stage_restore(plan.backup, plan.persist_dir)
    old = swap_in(staging, plan.persist_dir)
    result.restored_from = str(plan.backup.path)
    result.kept_old_dir = str(old) if old else None
    execution.plan.chroma_action.status = "done"
    after = chroma_files.compare_checksums(plan.backup.manifest["files"], plan.persist_dir)
    if after:
        raise BackupError(
            f"The restored {plan.persist_dir} differs from the backup's checksums ({'; '.join(after[:5])}): Qdrant "
            f"was not touched and the previous directory is kept at {old}; check the disk and run the rollback again."
        )
    log.info("ChromaDB: restored %s from %s (previous kept as %s)", plan.persist_dir, result.restored_from, old)
    with Ledger.for_run(execution.step.run.state_dir) as ledger:  # another directory: its write sequence is not trusted
        ledger.forget_sequences()
    return True


def _bring_back(execution: Execution, move: BringBack) -> bool:
    """The reverse sync; False (the rollback stops, nothing changed) on a conflict that appeared since the plan."""
    result = execution.result
    done = bring_back(execution.step, move.collections, restore=move.restore, on_conflict=move.on_conflict)
    execution.kept_conflicts = done.kept_conflicts
    result.reverse_sync = done.to_dict()
    if done.blocked:  # keep mode only: nothing was changed yet
        result.blocked = list(done.blocked)
        result.ok = False
        result.mark_not_done("stopped: conflict")
        return False
    result.brought_back = done.totals()["applied"]
    result.previous_dir = done.previous_dir
    if move.action.op == BRING_BACK or result.brought_back:
        move.action.status = "done"
    if move.restore and done.previous_dir:
        _drop_intermediate(execution.plan.chroma, Path(done.previous_dir), result)
    return True


def _drop_intermediate(plan: ChromaPlan, previous: Path, result: RollbackResult) -> None:
    """After a restore, the directory the reverse sync set aside is the backup's copy: removed when byte-identical
    to the (still kept) backup, so only ``<dir>.old-<time>`` remains beside the directory."""
    assert plan.backup is not None
    if previous.is_dir() and not chroma_files.compare_checksums(plan.backup.manifest["files"], previous):
        shutil.rmtree(previous, ignore_errors=True)
        result.previous_dir = None


def _clean_up_qdrant(execution: Execution, cleanup: QdrantCleanup) -> bool:
    """Record that the changes came back, then run each planned Qdrant action in order (a failure is recorded and
    the others still run)."""
    if not cleanup.carried_out:
        return True
    state_dir = execution.step.run.state_dir
    _record_progress(
        execution.step.run, brought_back=execution.plan.bring_back.collections if execution.plan.bring_back else []
    )
    target = open_target(execution.step)
    if target is None:
        return True
    ledger = Ledger.for_run(state_dir, create=False) if (state_dir / LEDGER).is_file() else None
    layout = get_layout(*run_layout_params(execution.plan.checkpoint))  # type: ignore[arg-type]

    def before_delete(name: str) -> None:
        _export_and_check(execution, target, ledger, layout, cleanup.deletions[name])

    with target, ledger or contextlib.nullcontext():
        for action in cleanup.actions:
            if action.status != "planned":
                continue
            try:
                apply_action(target, action, before_delete)
            except RunbookError as exc:
                action.status = "failed"
                execution.result.errors.append(str(exc))
                continue
            action.status = "done"
        execution.result.qdrant_after = qdrant_state(target)
    return True


def _export_and_check(
    execution: Execution, target: QdrantStore, ledger: Ledger | None, layout: Layout, deletion: Deletion
) -> None:
    """Export the collection (:mod:`~runbook_lib.steps.rollback.export`) and, when its changes were just brought
    back, re-check it against the ledger (a point the app wrote since stops the deletion); then record its deletion
    as begun."""
    collection, source = deletion.collection, deletion.source
    path = export_path(execution.step.run.dir, collection)
    check = ledger is not None and deletion.ledger_checked
    written, differ = export_points(
        target,
        collection,
        path,
        ledger=ledger if check else None,
        collection=source,
        layout=layout,
        allowed=set(execution.kept_conflicts.get(source or "", [])),
    )
    execution.result.exports[collection] = str(path)
    if differ:
        raise TargetError(
            f"Qdrant collection {collection!r} was not deleted: {differ} of its {written} point(s) changed after "
            "its changes were brought back into ChromaDB (the app is still writing to Qdrant); stop the app and "
            f"run the rollback again (its points are exported to {path})."
        )
    _record_progress(execution.step.run, collection)
    log.info("Qdrant: %s exported to %s (%d points) before its deletion", collection, path, written)


def _record_progress(run: Run, deleting: str | None = None, *, brought_back: list[str] | None = None) -> None:
    """Record in the run's checkpoint (``rollback``) how far the rollback got, before its next change: Qdrant's
    changes brought back (``brought_back``), or the removal of the collection ``deleting`` about to begin."""
    if not checkpoint_path(run).is_file():  # a run whose migration recorded nothing: nothing to resume
        return
    checkpoint = Checkpoint(checkpoint_path(run))
    record = checkpoint.data.setdefault("rollback", {"cleanup_started": []})
    if brought_back is not None:
        record.update(brought_back_at=utc_now(), brought_back=brought_back)
    if deleting is not None and deleting not in record["cleanup_started"]:
        record["cleanup_started"].append(deleting)
    checkpoint.save()


def _write_env(execution: Execution, app: AppSettings) -> bool:
    """Point the app back at ChromaDB: ``rollback.env``."""
    result = execution.result
    result.env_written = render_env(app.env, execution.plan.run_id)
    write_text_scrubbed(app.path, result.env_written)
    result.env_file = str(app.path)
    app.action.status = "done"
    return True


def _check_chroma(execution: Execution) -> None:
    """Prove ChromaDB is healthy and, when that means something (restored, nothing came back), complete."""
    chroma, result = execution.plan.chroma, execution.result
    settings = execution.step.settings.chroma
    if not chroma.touched and not settings.is_server:
        return
    result.health = chroma_health(settings)
    if result.health["error"]:
        result.errors.append(result.health["error"])
    if not chroma.touched:
        return
    result.counts_compared = chroma.restore and not result.brought_back
    result.counts = count_rows(chroma.backup_counts, result.health, compare=result.counts_compared)
    if bad := [r for r in result.counts if r["match"] is False]:
        result.errors.append(
            "Counts differ from the backup for "
            + ", ".join(f"{r['collection']} (backup {r['backup_count']}, now {r['count']})" for r in bad)
            + "."
        )


#: What the executor does for each kind of move.
_MOVES: dict[type, Callable[[Execution, Any], bool]] = {
    ChromaPlan: _restore,
    BringBack: _bring_back,
    QdrantCleanup: _clean_up_qdrant,
    AppSettings: _write_env,
}

"""Undo a migration run without losing a write (``05_rollback.ipynb`` · ``runbook rollback --run-id ID``):
``rollback(step)``.

The rollback first finishes (or undoes) a directory swap a crash interrupted
(:func:`~runbook_lib.chroma.writer.recover_swap`), then reads what the migrate step recorded in
``outputs/<run_id>/state/migrate_checkpoint.json`` (a missing one, for a run that migrated, is refused) and builds a
plan, changing nothing (every refusal below is raised here, before anything changes; so is a store that is not the
run's: :mod:`runbook_lib.state.identity`):

* **ChromaDB** (:mod:`~runbook_lib.steps.rollback.chroma_restore`): the run's backup is loaded and *every* checksum
  verified (a missing or corrupt backup stops the rollback). The live directory is **kept**: the app's writes made
  to it during the migration stay. It is restored from the backup only when it is missing, or damaged (SQLite's
  integrity check fails, or chromadb cannot open a scratch copy of it), or ``restore_from_backup=True``: the
  backup's ``data/`` is copied to a temporary sibling and verified, the live directory (if any) is renamed to
  ``<dir>.old-<time>`` (kept, never deleted) and the copy renamed into place.
* **A directory held open** by another process (a running app) is refused with ``confirm=True`` (a warning in the
  plan): :func:`runbook_lib.chroma.writer.refuse_if_open`.
* **Qdrant's changes come back first** (:mod:`~runbook_lib.steps.rollback.bring_back`): a reverse sync of every
  collection whose migration finished and whose Qdrant collection still exists brings into ChromaDB every point
  added, changed or deleted in Qdrant since the run last synchronised. ChromaDB's own changes since then stay
  (``keep_other_side``); a record changed on both sides is a conflict: the rollback stops before changing anything
  and names it, unless ``on_conflict`` (``source``: ChromaDB's version, ``target``: Qdrant's) picks a side. After a
  restore from the backup the sync runs with ``on_conflict="target"`` (Qdrant holds the newest complete state).
  The sync writes through a staged, verified copy of the directory; the previous one is kept as
  ``<dir>.pre-sync-<time>``. The plan says how many records come back (added/changed/deleted).
* **Only then is Qdrant cleaned up** (:mod:`~runbook_lib.steps.rollback.qdrant_cleanup`), after the checkpoint
  records (``rollback``) that the changes came back, and each collection's deletion as begun right before it (a
  rerun never brings anything back from a collection whose removal began: a half-deleted one may be re-created
  empty). Right before a deletion the collection is exported to the run folder and re-checked against the ledger
  (:mod:`~runbook_lib.steps.rollback.export`: a point the app wrote since stops that deletion). Collections the run
  created (``created_by_run``) are deleted; an alias the run pointed at its own collection is put back on the
  collection it pointed at before (``alias_previous``), or deleted when it did not exist before. Anything the run
  did not create is left untouched, and so is an alias someone has since moved. A collection the run created that
  **another run has since taken over** stops the rollback (:mod:`~runbook_lib.steps.rollback.other_runs` has the
  exact rule: another run under ``RUNBOOK_OUTPUTS``, same Qdrant, whose checkpoint has the same target name with
  ``replaced_existing``, ``created_by_run`` true, or ``created_by_run`` false after writing (resume), whose
  migration started at or after this run's (a tie counts), and which has not itself been rolled back).
* **The app**: ``outputs/<run_id>/rollback.env`` holds the settings that point the app back at ChromaDB
  (``VECTOR_DB=chroma`` and where ChromaDB is; never a secret).

Only with ``confirm=True`` is the plan carried out, in that order (restore if needed, bring back, clean up Qdrant,
``rollback.env``); the step ends with a health check of ChromaDB (opened from a scratch copy). Counts are compared
with the backup only when the directory was restored from it and nothing came back from Qdrant; otherwise they are
reported without that claim (ChromaDB then holds writes made since the backup, by design).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any

from runbook_lib.chroma import files as chroma_files
from runbook_lib.chroma.backup import backup_root
from runbook_lib.chroma.writer import processes_holding, refuse_if_open
from runbook_lib.config.params import RollbackParams
from runbook_lib.core.layouts import get_layout
from runbook_lib.errors import BackupError, TargetError
from runbook_lib.kernel.display import in_notebook, show
from runbook_lib.kernel.step import Step
from runbook_lib.state.checkpoint import Checkpoint, checkpoint_path, run_layout_params
from runbook_lib.state.identity import check_stores
from runbook_lib.state.ledger import LEDGER, Ledger
from runbook_lib.state.run import Run, utc_now, write_text_scrubbed
from runbook_lib.steps.rollback import report
from runbook_lib.steps.rollback.app_env import ENV_FILE, chroma_env, render_env
from runbook_lib.steps.rollback.bring_back import bring_back, bring_back_action, plan_bring_back, sync_names
from runbook_lib.steps.rollback.chroma_restore import (
    ChromaPlan,
    chroma_actions,
    chroma_health,
    count_rows,
    plan_chroma,
    stage_restore,
    swap_in,
)
from runbook_lib.steps.rollback.export import export_path, export_points
from runbook_lib.steps.rollback.other_runs import refuse_if_taken_over
from runbook_lib.steps.rollback.plan import BRING_BACK, DELETE_COLLECTION, SKIP, WRITE_ENV, Action, read_run_checkpoint
from runbook_lib.steps.rollback.qdrant_cleanup import (
    apply_qdrant,
    check_same_target,
    open_target,
    plan_qdrant,
    qdrant_state,
)
from runbook_lib.steps.rollback.result import RollbackResult

log = logging.getLogger(__name__)


def _check_not_open(plan: ChromaPlan, confirm: bool, warnings: list[str]) -> None:
    """A directory a running process holds open is not changed: refused with confirm, a warning in the plan."""
    live = plan.persist_dir
    if plan.mode == "skipped" or live is None or not live.exists():
        return
    if confirm:
        refuse_if_open(live)
    elif holders := processes_holding(live):
        warnings.append(f"{live} is open in {', '.join(holders[:5])}: stop the app before confirming.")


def _plan_qdrant(step: Step, checkpoint: dict[str, Any], result: RollbackResult) -> set[str] | None:
    """Add the Qdrant actions to the plan; the collection names in Qdrant (None: no local storage)."""
    p: RollbackParams = step.p
    target = open_target(step)
    if target is None:
        why = f"no storage yet in {step.settings.qdrant.describe()}" if p.remove_qdrant else "remove_qdrant=False"
        result.actions.append(Action("Qdrant", SKIP, "Qdrant", why, status="skipped"))
        return None
    with target:
        result.qdrant_before = qdrant_state(target)
    if p.remove_qdrant:
        actions, warnings = plan_qdrant(checkpoint, result.run_id, result.qdrant_before)
        result.actions += actions
        result.warnings += warnings
    else:
        result.actions.append(
            Action("Qdrant", SKIP, "Qdrant", "remove_qdrant=False: Qdrant is left as it is", status="skipped")
        )
    return set(result.qdrant_before["collections"])


def rollback(step: Step) -> RollbackResult:
    """The rollback step (``05_rollback.ipynb``): plan, and with ``confirm=True`` carry the plan out."""
    p: RollbackParams = step.p
    run_id = step.run.run_id
    result = RollbackResult(ok=True, run_id=run_id, confirmed=bool(p.confirm))
    chroma = step.settings.chroma
    checkpoint = read_run_checkpoint(step.run, None if chroma.is_server else backup_root(chroma.persist_dir) / run_id)
    if not checkpoint.get("collections") and not checkpoint.get("backup_path"):
        result.warnings.append(f"Run {run_id} recorded no migration work (it stopped before the backup).")

    # 1. Plan. Everything here only reads; a bad backup, a mismatched setting, an open directory, a collection
    #    another run took over or a conflict stops the rollback now.
    chroma_in_scope = bool(p.restore_chroma)
    if p.remove_qdrant or chroma_in_scope:
        check_stores(run_id, checkpoint, step.settings, source=chroma_in_scope, moved_target=False)
        check_same_target(step, checkpoint, result.warnings)
    chroma_plan = plan_chroma(step, checkpoint, result.warnings)
    result.chroma = chroma_plan.to_dict()
    result.actions = chroma_actions(chroma_plan)
    _check_not_open(chroma_plan, bool(p.confirm), result.warnings)
    existing = _plan_qdrant(step, checkpoint, result) if (p.remove_qdrant or chroma_in_scope) else None
    if p.remove_qdrant:
        doomed = [a.name for a in result.actions if a.op == DELETE_COLLECTION]
        refuse_if_taken_over(step.run, step.settings.outputs, checkpoint, doomed)
    restore = chroma_plan.mode == "restore"
    names: list[str] = []
    if chroma_in_scope and existing is not None and (chroma_plan.mode != "skipped" or step.settings.chroma.is_server):
        names = _not_being_removed(checkpoint, sync_names(checkpoint, existing, result.warnings), result.warnings)
    where = str(chroma_plan.persist_dir or step.settings.chroma.describe())
    back: Action | None = None
    if names:
        planned = plan_bring_back(step, names, restore=restore, backup=chroma_plan.backup, on_conflict=p.on_conflict)
        result.reverse_sync = planned.to_dict()
        back = bring_back_action(planned, restore=restore, on_conflict=p.on_conflict, where=where)
        result.actions.insert(1, back)
        if planned.blocked:
            result.blocked = list(planned.blocked)
    result.env = chroma_env(step.settings)
    env_path = step.run.dir / ENV_FILE
    result.actions.append(Action("app", WRITE_ENV, str(env_path), ", ".join(f"{k}={v}" for k, v in result.env.items())))
    log.info("rollback plan for run %s (%s):", run_id, "carrying it out" if p.confirm else "plan only")
    for a in result.actions:
        log.info("  %s: %s %s - %s", a.system, a.op, a.name, a.detail)
    if result.blocked or not p.confirm:
        result.ok = not result.blocked
        for a in result.actions:
            if a.status == "planned":
                a.status = "not done (stopped: conflict)" if result.blocked else "not done (confirm=False)"
        _show(result)
        return result
    _show(result)

    # 2. Change ChromaDB (restore if needed, then Qdrant's changes), then Qdrant, in that order.
    if restore:
        _restore(chroma_plan, result)
        with Ledger.for_run(step.run.state_dir) as ledger:  # another directory: its write sequence is not trusted
            ledger.forget_sequences()
    kept: dict[str, list[str]] = {}
    if names and back is not None:
        done = bring_back(step, names, restore=restore, on_conflict=p.on_conflict)
        kept = done.kept_conflicts
        result.reverse_sync = done.to_dict()
        if done.blocked:  # a conflict that appeared since the plan (keep mode only: nothing was changed yet)
            result.blocked = list(done.blocked)
            result.ok = False
            for a in result.actions:
                if a.status == "planned":
                    a.status = "not done (stopped: conflict)"
            return result
        result.brought_back = done.totals()["applied"]
        result.previous_dir = done.previous_dir
        if back.op == BRING_BACK or result.brought_back:
            back.status = "done"
        if restore and done.previous_dir:
            _drop_intermediate(chroma_plan, Path(done.previous_dir), result)
    if p.remove_qdrant and existing is not None:
        _record_progress(step.run, brought_back=names)  # before the first deletion: a rerun knows where it stands
        target = open_target(step)
        if target is not None:
            has_ledger = (step.run.state_dir / LEDGER).is_file()
            ledger = Ledger.for_run(step.run.state_dir, create=False) if has_ledger else None
            with target, ledger or contextlib.nullcontext():
                guard = _DeletionGuard(step, checkpoint, target, ledger, names, kept)
                apply_qdrant(target, result.actions, result.errors, guard.before_delete)
                result.exports = guard.exports
                result.qdrant_after = qdrant_state(target)

    # 3. Point the app back at ChromaDB, then prove ChromaDB is healthy (and, when that means something, complete).
    result.env_written = render_env(result.env, run_id)
    write_text_scrubbed(env_path, result.env_written)
    result.env_file = str(env_path)
    result.actions[-1].status = "done"
    if chroma_plan.mode != "skipped" or step.settings.chroma.is_server:
        result.health = chroma_health(step.settings.chroma)
        if result.health["error"]:
            result.errors.append(result.health["error"])
        if chroma_plan.mode != "skipped":
            result.counts_compared = restore and not result.brought_back
            result.counts = count_rows(chroma_plan.backup_counts, result.health, compare=result.counts_compared)
            bad = [r for r in result.counts if r["match"] is False]
            if bad:
                result.errors.append(
                    "Counts differ from the backup for "
                    + ", ".join(f"{r['collection']} (backup {r['backup_count']}, now {r['count']})" for r in bad)
                    + "."
                )
    result.ok = not result.errors
    return result


class _DeletionGuard:
    """Right before a collection is deleted: export its points (:mod:`~runbook_lib.steps.rollback.export`) and, when
    its changes were just brought back, re-check it against the ledger (a point the app wrote since stops the
    deletion); then record the deletion as begun."""

    def __init__(
        self,
        step: Step,
        checkpoint: dict[str, Any],
        target: Any,
        ledger: Ledger | None,
        brought_back: list[str],
        kept: dict[str, list[str]],
    ) -> None:
        self.step, self.target, self.ledger, self.kept = step, target, ledger, kept
        states = checkpoint.get("collections", {})
        self.source_of = {st["target"]: name for name, st in states.items() if st.get("target")}
        self.checked = {states[name]["target"] for name in brought_back}
        self.layout = get_layout(*run_layout_params(checkpoint))  # type: ignore[arg-type]
        self.exports: dict[str, str] = {}

    def before_delete(self, collection: str) -> None:
        source = self.source_of.get(collection)
        path = export_path(self.step.run.dir, collection)
        check = self.ledger is not None and collection in self.checked and source is not None
        written, differ = export_points(
            self.target,
            collection,
            path,
            ledger=self.ledger if check else None,
            collection=source,
            layout=self.layout,
            allowed=set(self.kept.get(source or "", [])),
        )
        self.exports[collection] = str(path)
        if differ:
            raise TargetError(
                f"Qdrant collection {collection!r} was not deleted: {differ} of its {written} point(s) changed after "
                "its changes were brought back into ChromaDB (the app is still writing to Qdrant); stop the app and "
                f"run the rollback again (its points are exported to {path})."
            )
        _record_progress(self.step.run, collection)
        log.info("Qdrant: %s exported to %s (%d points) before its deletion", collection, path, written)


def _not_being_removed(checkpoint: dict[str, Any], names: list[str], warnings: list[str]) -> list[str]:
    """``names`` without the collections whose Qdrant removal an earlier attempt of this rollback began (after
    bringing their changes back): what is left of them (a half-deleted collection may be re-created empty) is
    never read as Qdrant's changes."""
    record = checkpoint.get("rollback") or {}
    begun = set(record.get("cleanup_started") or [])
    keep = []
    for name in names:
        target = checkpoint["collections"][name]["target"]
        if target in begun:
            warnings.append(
                f"The removal of Qdrant collection {target!r} began in an earlier attempt of this rollback, after "
                f"its changes were brought back into ChromaDB ({record.get('brought_back_at', 'time not recorded')}): "
                "nothing is brought back from it again; its removal is finished."
            )
        else:
            keep.append(name)
    return keep


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


def _show(result: RollbackResult) -> None:
    table = report.plan_table(result)
    show(table if in_notebook() else table.to_string(index=False))


def _restore(plan: ChromaPlan, result: RollbackResult) -> None:
    """Stage the backup (copy + verify) beside the live directory, then swap it in; the old one is kept."""
    assert plan.backup is not None and plan.persist_dir is not None
    staging = stage_restore(plan.backup, plan.persist_dir)
    old = swap_in(staging, plan.persist_dir)
    result.restored_from = str(plan.backup.path)
    result.kept_old_dir = str(old) if old else None
    result.actions[0].status = "done"
    after = chroma_files.compare_checksums(plan.backup.manifest["files"], plan.persist_dir)
    if after:
        raise BackupError(
            f"The restored {plan.persist_dir} differs from the backup's checksums ({'; '.join(after[:5])}): Qdrant "
            f"was not touched and the previous directory is kept at {old}; check the disk and run the rollback again."
        )
    log.info("ChromaDB: restored %s from %s (previous kept as %s)", plan.persist_dir, result.restored_from, old)


def _drop_intermediate(plan: ChromaPlan, previous: Path, result: RollbackResult) -> None:
    """After a restore, the directory the reverse sync set aside is the backup's copy: removed when byte-identical
    to the (still kept) backup, so only ``<dir>.old-<time>`` remains beside the directory."""
    assert plan.backup is not None
    if previous.is_dir() and not chroma_files.compare_checksums(plan.backup.manifest["files"], previous):
        shutil.rmtree(previous, ignore_errors=True)
        result.previous_dir = None

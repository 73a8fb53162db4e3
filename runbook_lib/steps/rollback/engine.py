"""Undo a migration run (``05_rollback.ipynb`` · ``runbook rollback --run-id ID``): ``rollback(step)``.

The rollback reads what the migrate step recorded in ``outputs/<run_id>/state/migrate_checkpoint.json``
and first builds a plan, changing nothing:

* **ChromaDB**: the run's backup is loaded and *every* checksum verified (a missing or corrupt backup
  stops the rollback here, before anything is changed). When the live directory is still byte-identical
  to its state when the backup was taken (the manifest's ``source_files``; the migration never writes
  its source) there is nothing to restore and it is left in place. Otherwise the backup's ``data/`` is
  copied to a temporary sibling, the copy's checksums are verified against the manifest, then the live
  directory is renamed to ``<dir>.old-<time>`` (kept, never deleted) and the copy renamed into place.
* **Qdrant**: collections the run created (``created_by_run``) are deleted; an alias the run pointed at
  its own collection is put back on the collection it pointed at before (``alias_previous``) in one
  atomic request, or deleted when it did not exist before. Anything the run did not create is left
  untouched, and so is an alias someone has since moved elsewhere.
* **The app**: ``outputs/<run_id>/rollback.env`` holds the settings that point the app back at ChromaDB
  (``VECTOR_DB=chroma`` and where ChromaDB is; never a secret).

Only with ``confirm=True`` is the plan carried out; the step then ends with a health check of ChromaDB
(opened from a scratch copy) and a count check of every collection against the backup.

This module is the orchestration only: the parts are in :mod:`~runbook_lib.steps.rollback.chroma_restore`,
:mod:`~runbook_lib.steps.rollback.qdrant_cleanup` and :mod:`~runbook_lib.steps.rollback.app_env`.
"""

from __future__ import annotations

import logging

from runbook_lib.config.params import RollbackParams
from runbook_lib.runtime.display import in_notebook, show
from runbook_lib.runtime.step import Step
from runbook_lib.source import chroma_files
from runbook_lib.state.run import write_text_scrubbed
from runbook_lib.steps.rollback import report
from runbook_lib.steps.rollback.app_env import ENV_FILE, chroma_env, render_env
from runbook_lib.steps.rollback.chroma_restore import (
    chroma_actions,
    chroma_health,
    count_rows,
    plan_chroma,
    stage_restore,
    swap_in,
)
from runbook_lib.steps.rollback.plan import SKIP, WRITE_ENV, Action, read_run_checkpoint
from runbook_lib.steps.rollback.qdrant_cleanup import (
    apply_qdrant,
    check_same_target,
    open_target,
    plan_qdrant,
    qdrant_state,
)
from runbook_lib.steps.rollback.result import RollbackResult
from runbook_lib.target.qdrant import QdrantTarget

log = logging.getLogger(__name__)


def rollback(step: Step) -> RollbackResult:
    """The rollback step (``05_rollback.ipynb``): plan, and with ``confirm=True`` carry the plan out."""
    p: RollbackParams = step.p
    run_id = step.run.run_id
    result = RollbackResult(ok=True, run_id=run_id, confirmed=bool(p.confirm))
    checkpoint = read_run_checkpoint(step.run)
    if not checkpoint.get("collections") and not checkpoint.get("backup_path"):
        result.warnings.append(f"Run {run_id} recorded no migration work (it stopped before the backup).")

    # 1. Plan. Everything here only reads; a bad backup or a mismatched setting stops the rollback now.
    if p.remove_qdrant:
        check_same_target(step, checkpoint, result.warnings)
    chroma_plan = plan_chroma(step, checkpoint, result.warnings)
    result.chroma = chroma_plan.to_dict()
    result.actions = chroma_actions(chroma_plan)
    target: QdrantTarget | None = None
    try:
        if p.remove_qdrant:
            target = open_target(step)
        if target is not None:
            result.qdrant_before = qdrant_state(target)
            qdrant_actions, qdrant_warnings = plan_qdrant(checkpoint, run_id, result.qdrant_before)
            result.actions += qdrant_actions
            result.warnings += qdrant_warnings
        elif p.remove_qdrant:
            result.actions.append(
                Action("Qdrant", SKIP, "Qdrant", f"no local storage at {step.settings.qdrant.path}", status="skipped")
            )
        else:
            result.actions.append(
                Action("Qdrant", SKIP, "Qdrant", "remove_qdrant=False: Qdrant is left as it is", status="skipped")
            )
        result.env = chroma_env(step.settings)
        env_path = step.run.dir / ENV_FILE
        result.actions.append(
            Action("app", WRITE_ENV, str(env_path), ", ".join(f"{k}={v}" for k, v in result.env.items()))
        )
        log.info("rollback plan for run %s (%s):", run_id, "carrying it out" if p.confirm else "plan only")
        for a in result.actions:
            log.info("  %s: %s %s - %s", a.system, a.op, a.name, a.detail)
        table = report.plan_table(result)
        show(table if in_notebook() else table.to_string(index=False))
        if not p.confirm:
            for a in result.actions:
                if a.status == "planned":
                    a.status = "not done (confirm=False)"
            return result

        # 2. Stage the restore (copy + verify) before changing anything, then change ChromaDB, then Qdrant.
        if chroma_plan.mode == "restore":
            assert chroma_plan.backup is not None and chroma_plan.persist_dir is not None
            staging = stage_restore(chroma_plan.backup, chroma_plan.persist_dir)
            old = swap_in(staging, chroma_plan.persist_dir)
            result.restored_from = str(chroma_plan.backup.path)
            result.kept_old_dir = str(old) if old else None
            result.actions[0].status = "done"
            after = chroma_files.compare_checksums(chroma_plan.backup.manifest["files"], chroma_plan.persist_dir)
            if after:
                result.errors.append(
                    f"The restored {chroma_plan.persist_dir} differs from the backup's checksums: "
                    + "; ".join(after[:5])
                    + "."
                )
            log.info(
                "ChromaDB: restored %s from %s (previous kept as %s)",
                chroma_plan.persist_dir,
                result.restored_from,
                old,
            )
        elif chroma_plan.mode == "unchanged":
            result.actions[0].status = "done (unchanged)"
        if target is not None:
            apply_qdrant(target, result.actions, result.errors)
            result.qdrant_after = qdrant_state(target)
    finally:
        if target is not None:
            target.close()

    # 3. Point the app back at ChromaDB, then prove ChromaDB is healthy and complete.
    result.env_written = render_env(result.env, run_id)
    write_text_scrubbed(env_path, result.env_written)
    result.env_file = str(env_path)
    result.actions[-1].status = "done"
    if chroma_plan.mode != "skipped" or step.settings.chroma.is_server:
        result.health = chroma_health(step.settings.chroma)
        if result.health["error"]:
            result.errors.append(result.health["error"])
        if chroma_plan.mode != "skipped":
            result.counts = count_rows(chroma_plan.backup_counts, result.health)
            bad = [r for r in result.counts if not r["match"]]
            if bad:
                result.errors.append(
                    "Counts differ from the backup for "
                    + ", ".join(
                        f"{r['collection']} (backup {r['backup_count']}, now {r['restored_count']})" for r in bad
                    )
                    + "."
                )
    result.ok = not result.errors
    return result

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

The plan is data (:class:`~runbook_lib.steps.rollback.plan.RollbackPlan`, built by
:func:`~runbook_lib.steps.rollback.planner.build_plan`) and is always shown. Only with ``confirm=True`` is it carried
out, by one executor (:func:`~runbook_lib.steps.rollback.executor.carry_out`), in that order (restore if needed,
bring back, clean up Qdrant, ``rollback.env``); the step ends with a health check of ChromaDB (opened from a
scratch copy). Counts are compared
with the backup only when the directory was restored from it and nothing came back from Qdrant; otherwise they are
reported without that claim (ChromaDB then holds writes made since the backup, by design).
"""

from __future__ import annotations

import logging

from runbook_lib.kernel.display import in_notebook, show
from runbook_lib.kernel.step import Step
from runbook_lib.steps.rollback import report
from runbook_lib.steps.rollback.executor import carry_out
from runbook_lib.steps.rollback.planner import build_plan
from runbook_lib.steps.rollback.result import RollbackResult

log = logging.getLogger(__name__)


def rollback(step: Step) -> RollbackResult:
    """The rollback step (``05_rollback.ipynb``): plan, and with ``confirm=True`` carry the plan out."""
    confirmed = bool(step.p.confirm)
    plan = build_plan(step)
    result = RollbackResult.of_plan(plan, confirmed=confirmed, notes=[])
    log.info("rollback plan for run %s (%s):", plan.run_id, "carrying it out" if confirmed else "plan only")
    for a in result.actions:
        log.info("  %s: %s %s - %s", a.system, a.op, a.name, a.detail)
    if result.blocked or not confirmed:
        result.mark_not_done("stopped: conflict" if result.blocked else "confirm=False")
        _show(result)
        return result
    _show(result)
    carry_out(step, plan, result)
    return result


def _show(result: RollbackResult) -> None:
    table = report.plan_table(result)
    show(table if in_notebook() else table.to_string(index=False))

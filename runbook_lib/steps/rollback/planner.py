"""Building the rollback's plan (:class:`~runbook_lib.steps.rollback.plan.RollbackPlan`), changing nothing:
:func:`build_plan`.

Every refusal is raised here, before anything changes: a missing checkpoint for a run that migrated, a store that
is not the run's (:mod:`runbook_lib.state.identity`, :func:`~runbook_lib.steps.rollback.qdrant_cleanup.
check_same_target`), a bad backup (:func:`~runbook_lib.steps.rollback.chroma_restore.plan_chroma`), a directory
another process holds open (with ``confirm``), a collection another run took over
(:mod:`~runbook_lib.steps.rollback.other_runs`). A conflict is not raised: the plan says it is blocked.
"""

from __future__ import annotations

from typing import Any

from runbook_lib.chroma.backup import backup_root
from runbook_lib.chroma.writer import processes_holding, refuse_if_open
from runbook_lib.config.params import RollbackParams
from runbook_lib.kernel.step import Step
from runbook_lib.state.identity import check_stores
from runbook_lib.steps.rollback.app_env import ENV_FILE, chroma_env
from runbook_lib.steps.rollback.bring_back import bring_back_action, plan_bring_back, sync_names
from runbook_lib.steps.rollback.chroma_restore import plan_chroma
from runbook_lib.steps.rollback.other_runs import refuse_if_taken_over
from runbook_lib.steps.rollback.plan import (
    SKIP,
    WRITE_ENV,
    Action,
    AppSettings,
    BringBack,
    ChromaPlan,
    QdrantCleanup,
    RollbackPlan,
    read_run_checkpoint,
)
from runbook_lib.steps.rollback.qdrant_cleanup import check_same_target, open_target, plan_qdrant, qdrant_state


def build_plan(step: Step) -> RollbackPlan:
    """What rolling back ``step.run`` does, decided from what the run recorded and the stores as they are now."""
    p: RollbackParams = step.p
    chroma = step.settings.chroma
    run_id = step.run.run_id
    warnings: list[str] = []
    checkpoint = read_run_checkpoint(step.run, None if chroma.is_server else backup_root(chroma.persist_dir) / run_id)
    if not checkpoint.get("collections") and not checkpoint.get("backup_path"):
        warnings.append(f"Run {run_id} recorded no migration work (it stopped before the backup).")
    chroma_in_scope = bool(p.restore_chroma)
    if p.remove_qdrant or chroma_in_scope:
        check_stores(run_id, checkpoint, step.settings, source=chroma_in_scope, moved_target=False)
        check_same_target(step, checkpoint, warnings)
    chroma_plan = plan_chroma(step, checkpoint, warnings)
    _check_not_open(chroma_plan, bool(p.confirm), warnings)
    qdrant = _plan_qdrant(step, checkpoint, warnings) if (p.remove_qdrant or chroma_in_scope) else None
    if qdrant is not None and p.remove_qdrant:
        refuse_if_taken_over(step.run, step.settings.outputs, checkpoint, qdrant.doomed)
    bring_back = _plan_bring_back(step, checkpoint, chroma_plan, qdrant, warnings) if chroma_in_scope else None
    if qdrant is not None:
        qdrant.plan_deletions(checkpoint, bring_back.collections if bring_back else [])
    return RollbackPlan(
        run_id, checkpoint, chroma_plan, chroma_plan.action(), bring_back, qdrant, _app_settings(step), warnings
    )


def _app_settings(step: Step) -> AppSettings:
    env = chroma_env(step.settings)
    path = step.run.dir / ENV_FILE
    return AppSettings(env, path, Action("app", WRITE_ENV, str(path), ", ".join(f"{k}={v}" for k, v in env.items())))


def _check_not_open(plan: ChromaPlan, confirm: bool, warnings: list[str]) -> None:
    """A directory a running process holds open is not changed: refused with confirm, a warning in the plan."""
    live = plan.persist_dir
    if not plan.touched or live is None or not live.exists():
        return
    if confirm:
        refuse_if_open(live)
    elif holders := processes_holding(live):
        warnings.append(f"{live} is open in {', '.join(holders[:5])}: stop the app before confirming.")


def _plan_qdrant(step: Step, checkpoint: dict[str, Any], warnings: list[str]) -> QdrantCleanup:
    """The Qdrant move; only lines saying why Qdrant is left alone when it has no storage or ``remove_qdrant``
    is off (its state is still read, for the bring-back)."""
    p: RollbackParams = step.p
    target = open_target(step)
    if target is None:
        why = f"no storage yet in {step.settings.qdrant.describe()}" if p.remove_qdrant else "remove_qdrant=False"
        return QdrantCleanup([Action("Qdrant", SKIP, "Qdrant", why, status="skipped")])
    with target:
        state = qdrant_state(target)
    if not p.remove_qdrant:
        left = Action("Qdrant", SKIP, "Qdrant", "remove_qdrant=False: Qdrant is left as it is", status="skipped")
        return QdrantCleanup([left], state)
    actions, found = plan_qdrant(checkpoint, step.run.run_id, state)
    warnings += found
    return QdrantCleanup(actions, state, carried_out=True)


def _plan_bring_back(
    step: Step, checkpoint: dict[str, Any], chroma_plan: ChromaPlan, qdrant: QdrantCleanup | None, warnings: list[str]
) -> BringBack | None:
    """The reverse sync of every collection whose migration finished and whose Qdrant collection still exists
    (and whose removal no earlier attempt began); None when there is none, or ChromaDB or Qdrant is out of it."""
    if qdrant is None or qdrant.state_before is None or not (chroma_plan.touched or step.settings.chroma.is_server):
        return None
    existing = set(qdrant.state_before["collections"])
    names = _not_being_removed(checkpoint, sync_names(checkpoint, existing, warnings), warnings)
    if not names:
        return None
    on_conflict = step.p.on_conflict
    planned = plan_bring_back(
        step, names, restore=chroma_plan.restore, backup=chroma_plan.backup, on_conflict=on_conflict
    )
    where = str(chroma_plan.persist_dir or step.settings.chroma.describe())
    action = bring_back_action(planned, restore=chroma_plan.restore, on_conflict=on_conflict, where=where)
    return BringBack(names, chroma_plan.restore, on_conflict, planned, action)


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

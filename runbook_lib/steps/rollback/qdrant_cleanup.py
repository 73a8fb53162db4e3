"""The Qdrant part of the rollback: remove what the run created, put back the aliases it moved.

* :class:`TargetIdentity` and :func:`check_same_target`: refuse to clean up a Qdrant other than the one the run wrote
  to (compared as kind and URL or folder, :func:`runbook_lib.state.identity.target_store`, never as display text);
* :func:`plan_qdrant` (reads only, from :func:`qdrant_state`): collections the run created (``created_by_run``) are
  deleted; an alias the run pointed at its own collection is put back on the collection it pointed at before
  (``alias_previous``) in one atomic request, or deleted when it did not exist before. Anything the run did not
  create is left untouched, and so is an alias someone has since moved elsewhere;
* :func:`apply_action` (the change): carries one planned action out (the executor runs them in the plan's order,
  alias changes first).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook_lib.config.faults import fault_point
from runbook_lib.config.settings import QdrantSettings
from runbook_lib.core.plan import target_names
from runbook_lib.errors import ConfigError
from runbook_lib.kernel.step import Step
from runbook_lib.qdrant import connect as qdrant_connect
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.state.identity import target_store
from runbook_lib.steps.rollback.plan import DELETE_ALIAS, DELETE_COLLECTION, LEAVE, PUT_BACK_ALIAS, SKIP, Action

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetIdentity:
    """Which Qdrant: its kind (``server``, ``edge``, ``local``) and its URL or resolved folder, as a run's checkpoint
    records it (``stores.target``, :func:`runbook_lib.state.identity.target_store`); never a secret."""

    kind: str
    location: str

    @classmethod
    def of_settings(cls, qdrant: QdrantSettings) -> TargetIdentity:
        return cls(**target_store(qdrant))

    @classmethod
    def recorded(cls, record: Any) -> TargetIdentity | None:
        """From a checkpoint's ``stores.target`` (None when it is not a record)."""
        if isinstance(record, dict) and isinstance(record.get("kind"), str) and "location" in record:
            return cls(record["kind"], str(record["location"]))
        return None

    @classmethod
    def described(cls, text: str) -> TargetIdentity:
        """From what a run migrated before ``stores`` were recorded filed instead (the checkpoint's or a step
        result's ``target``: :meth:`QdrantSettings.describe` text); text of no known form is an identity of its
        own kind, equal to no settings."""
        text = text.replace(" (API key set)", "").strip()
        for prefix, kind in _DESCRIBED:
            if text.startswith(prefix):
                where = text.removeprefix(prefix).strip()
                location = where.rstrip("/") if kind == "server" else str(Path(where).resolve())
                return cls(kind, location)
        return cls("described", text)

    def __str__(self) -> str:
        return f"Qdrant {self.kind} {self.location}"


#: The forms of :meth:`QdrantSettings.describe` (the only identity runs recorded before ``stores``).
_DESCRIBED = (("Qdrant server ", "server"), ("Qdrant Edge at ", "edge"), ("Qdrant embedded local mode at ", "local"))


def recorded_target(checkpoint: dict[str, Any]) -> TargetIdentity | None:
    """The Qdrant a run's checkpoint says it migrated into: ``stores.target``, else its ``target`` text."""
    stores = checkpoint.get("stores")
    if found := TargetIdentity.recorded(stores.get("target") if isinstance(stores, dict) else None):
        return found
    text = checkpoint.get("target")
    return TargetIdentity.described(text) if isinstance(text, str) else None


def check_same_target(step: Step, checkpoint: dict[str, Any], warnings: list[str]) -> None:
    """Refuse to clean up a Qdrant other than the one the run wrote to (from the checkpoint's record when migrate
    made one, else from the ``target`` of the run's step results)."""
    recorded = recorded_target(checkpoint)
    for name in ("migrate", "verify", "monitor", "dry-run") if recorded is None else ():
        data = step.run.read_result(name)
        if data and data.get("target"):
            recorded = TargetIdentity.described(str(data["target"]))
            break
    now = step.settings.qdrant.describe()
    if recorded is None:
        warnings.append(
            "The run filed no step result naming its Qdrant target, so the rollback could not confirm that "
            f"{now} is the Qdrant the run wrote to."
        )
        return
    if recorded != TargetIdentity.of_settings(step.settings.qdrant):
        raise ConfigError(
            f"Run {step.run.run_id} migrated into {recorded} but the settings now point at {now}: set QDRANT_URL "
            "or QDRANT_PATH as they were for that run (the rollback reads its changes back, then cleans it up)."
        )


def qdrant_state(target: QdrantStore) -> dict[str, Any]:
    return {"collections": target.collection_names(), "aliases": target.aliases()}


def plan_qdrant(checkpoint: dict[str, Any], run_id: str, state: dict[str, Any]) -> tuple[list[Action], list[str]]:
    """Qdrant actions (alias changes first, then collection deletions) and warnings, from the current state."""
    collections = set(state["collections"])
    aliases: dict[str, str] = dict(state["aliases"])
    alias_ops: list[Action] = []
    coll_ops: list[Action] = []
    warnings: list[str] = []
    for source, st in sorted(checkpoint.get("collections", {}).items()):
        target = st.get("target")
        alias = st.get("alias")
        versioned = bool(target) and target == target_names(source, run_id, "alias")[0]
        created = bool(st.get("created_by_run")) or (versioned and target in collections)
        if alias:
            current = aliases.get(alias)
            previous = st.get("alias_previous")
            if current is None:
                if st.get("alias_set"):
                    alias_ops.append(Action("Qdrant", SKIP, alias, "alias already gone", status="skipped"))
            elif current != target:
                alias_ops.append(
                    Action(
                        "Qdrant",
                        LEAVE,
                        alias,
                        f"alias now points at {current!r}, not at this run's {target!r}: someone moved it since",
                        status="skipped",
                    )
                )
            elif previous and previous != target and previous in collections:
                alias_ops.append(
                    Action("Qdrant", PUT_BACK_ALIAS, alias, f"{target!r} -> {previous!r} (atomic switch)", to=previous)
                )
            else:
                if not previous:
                    why = "it did not exist before this run"
                elif previous == target:
                    why = "the collection it pointed at before this run is not recorded"
                else:
                    why = f"the collection it pointed at before this run, {previous!r}, no longer exists"
                    warnings.append(
                        f"Alias {alias!r} pointed at {previous!r} before run {run_id}, which no longer exists: the "
                        "alias is deleted instead of put back."
                    )
                alias_ops.append(Action("Qdrant", DELETE_ALIAS, alias, f"points at {target!r}; {why}"))
        if not target:
            continue
        if target not in collections:
            if created:
                coll_ops.append(Action("Qdrant", SKIP, target, "created by this run; already gone", status="skipped"))
            continue
        if created:
            points = st.get("records_done") if st.get("status") != "done" else st.get("source_count")
            coll_ops.append(
                Action(
                    "Qdrant",
                    DELETE_COLLECTION,
                    target,
                    f"created by this run for {source!r} (migration status {st.get('status', '?')}"
                    + (f", {points} records written" if points is not None else "")
                    + ")",
                )
            )
            if st.get("replaced_existing"):
                warnings.append(
                    f"Run {run_id} replaced an existing Qdrant collection {target!r} (on_existing=recreate): the "
                    "rollback deletes the new one but cannot bring the old one back."
                )
            continue
        detail = "not created by this run: left untouched"
        if st.get("created_by_run") is False and st.get("status") in ("copying", "done", "failed"):
            detail += " (the points this run wrote into it with on_existing=resume stay)"
            warnings.append(
                f"Qdrant collection {target!r} existed before run {run_id}, which wrote points into it "
                "(on_existing=resume): the rollback leaves it, and those points, as they are."
            )
        coll_ops.append(Action("Qdrant", LEAVE, target, detail, status="skipped"))
    return alias_ops + coll_ops, warnings


def apply_action(target: QdrantStore, action: Action, before_delete: Callable[[str], None]) -> None:
    """Carry out one planned Qdrant action; ``before_delete`` exports and re-checks a collection, and records its
    deletion as begun, right before it is deleted."""
    if action.op == PUT_BACK_ALIAS:
        assert action.to is not None
        target.set_alias(action.name, action.to)
    elif action.op == DELETE_ALIAS:
        target.delete_alias(action.name)
    elif action.op == DELETE_COLLECTION:
        before_delete(action.name)
        target.delete_collection(action.name)
        fault_point("rollback:collection-deleted")
    log.info("Qdrant: %s %s: done", action.op, action.name)


def open_target(step: Step) -> QdrantStore | None:
    """The Qdrant target, or None when an embedded target has no storage yet (nothing can be there)."""
    q = step.settings.qdrant
    if not qdrant_connect.holds_storage(q):
        return None
    return qdrant_connect.open_target(q)

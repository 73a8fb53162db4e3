"""Other runs that have since taken over a Qdrant collection this run created: the rollback must not delete it.

The rule (:func:`refuse_if_taken_over`), checked before anything changes, for every collection this run created
(``created_by_run``) that the rollback would delete. Every other run folder under ``RUNBOOK_OUTPUTS`` with a
migration checkpoint (``state/migrate_checkpoint.json``) is looked at; such a run *took the collection over* when

1. its checkpoint has an entry whose ``target`` is the same collection name, and
2. that entry says it changed that collection: ``replaced_existing`` (``on_existing=recreate``: it deleted the
   collection and built its own), or ``created_by_run`` true (it created a collection of that name anew), or
   ``created_by_run`` false with a status of ``copying``/``done``/``failed`` (``on_existing=resume``: it wrote
   points into it), and
3. it migrated into the same Qdrant (its checkpoint's record of it,
   :func:`~runbook_lib.steps.rollback.qdrant_cleanup.recorded_target`; a run that recorded none counts), and
4. its migration started at or after this run's (:func:`migration_started`: the run's backup ``created_at``,
   which a resumed migration keeps, else its manifest's ``steps.migrate.started_at``, else the run's
   ``created_at``; backups record microseconds, so two migrations started within the same second are still
   ordered; a time known only to the second is compared at one-second resolution and **a tie counts as later**,
   so the rollback refuses rather than guesses), and
5. it has not itself been rolled back (its ``05_rollback.json`` says ``confirmed`` and ``ok``: its rollback
   brought its Qdrant writes back to ChromaDB and removed what it created).

Any such run makes the rollback stop with a :class:`ConfigError` naming it (roll that run back first). Runs filed
under another ``RUNBOOK_OUTPUTS`` cannot be seen.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runbook_lib.errors import ConfigError
from runbook_lib.state.checkpoint import CHECKPOINT
from runbook_lib.state.run import Run
from runbook_lib.steps.rollback.qdrant_cleanup import recorded_target

_WROTE_STATUSES = ("copying", "done", "failed")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def migration_started(run_dir: Path, checkpoint: dict[str, Any]) -> str:
    """When the run's migration first started (ISO UTC, to the second or finer): see the module's rule, point 4."""
    backup_path = checkpoint.get("backup_path")
    if backup_path:
        manifest = _read_json(Path(backup_path) / "manifest.json")
        if manifest and manifest.get("created_at"):
            return str(manifest["created_at"])
    run_manifest = _read_json(run_dir / "manifest.json") or {}
    started = (run_manifest.get("steps", {}).get("migrate") or {}).get("started_at")
    return str(started or run_manifest.get("created_at") or "")


def started_before(a: str, b: str) -> bool:
    """Whether start time ``a`` is strictly before ``b``: to the microsecond when both record it, else at one-second
    resolution, where a tie is not "before" (unreadable times are not either)."""
    try:
        x, y = datetime.fromisoformat(a), datetime.fromisoformat(b)
    except ValueError:
        return False
    if x.tzinfo is None or y.tzinfo is None:
        x, y = x.replace(tzinfo=UTC), y.replace(tzinfo=UTC)
    if "." in a[19:] and "." in b[19:]:
        return x < y
    return x.replace(microsecond=0) < y.replace(microsecond=0)


def _claim(entry: dict[str, Any]) -> str | None:
    name = entry.get("target")
    if entry.get("replaced_existing"):
        return f"replaced Qdrant collection {name!r} with its own (on_existing=recreate)"
    if entry.get("created_by_run") is True:
        return f"created Qdrant collection {name!r} anew"
    if entry.get("created_by_run") is False and entry.get("status") in _WROTE_STATUSES:
        return f"written into Qdrant collection {name!r} (on_existing=resume)"
    return None


def _rolled_back(run_dir: Path) -> bool:
    data = _read_json(run_dir / "05_rollback.json") or {}
    return bool(data.get("confirmed")) and bool(data.get("ok"))


def _same_target(mine: dict[str, Any], theirs: dict[str, Any]) -> bool:
    """Whether two runs' checkpoints name the same Qdrant (a run that recorded none counts as the same)."""
    a, b = recorded_target(mine), recorded_target(theirs)
    return a is None or b is None or a == b


def takeovers(run: Run, outputs: Path, checkpoint: dict[str, Any], collections: list[str]) -> list[str]:
    """One sentence per (other run, collection) that took over one of ``collections`` (this run created them)."""
    wanted = set(collections)
    if not wanted or not outputs.is_dir():
        return []
    mine = migration_started(run.dir, checkpoint)
    found: list[str] = []
    for other in sorted(outputs.iterdir()):
        if other.name == run.run_id or not (other / "state" / CHECKPOINT).is_file():
            continue
        theirs = _read_json(other / "state" / CHECKPOINT)
        if theirs is None or not _same_target(checkpoint, theirs):
            continue
        entries = theirs.get("collections")
        if not isinstance(entries, dict) or _rolled_back(other):
            continue
        started = migration_started(other, theirs)
        if started and mine and started_before(started, mine):
            continue
        for state in entries.values():
            if not isinstance(state, dict) or state.get("target") not in wanted:
                continue
            claim = _claim(state)
            if claim:
                when = f"its migration started {started}" if started else "its start time is unknown"
                found.append(f"run {other.name} has since {claim} ({when})")
    return found


def refuse_if_taken_over(run: Run, outputs: Path, checkpoint: dict[str, Any], collections: list[str]) -> None:
    """:class:`ConfigError` (nothing changed) when another run took over a collection this run would delete."""
    found = takeovers(run, outputs, checkpoint, collections)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise ConfigError(
            f"Rollback of run {run.run_id} stopped before changing anything: {found[0]}{more}, so deleting it would "
            "drop that run's data; roll that run back first (or pass remove_qdrant=false to leave Qdrant alone)."
        )

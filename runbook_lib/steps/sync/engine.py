"""The sync step (``06_sync.ipynb``): bring a migrated run up to date with a live app (SPEC "Live data").

0. Refuse what this run does not know (:mod:`runbook_lib.state.identity`: settings that name another store, a
   collection deleted or re-created on either side, a damaged or missing ledger, an ``on_conflict`` winner this
   direction cannot write), after finishing a directory swap a crash interrupted.
1. Read the live source as it is now: a Chroma server directly; a persistent directory through a snapshot kept in
   the run's ``state/sync_snapshot`` (so a verify after the sync checks the target against the source as of
   this sync) and read from a scratch copy of it.
2. Plan (:mod:`~runbook_lib.steps.sync.diff`): changes on each side since the last sync, and conflicts.
3. Stop before writing when the plan holds what this direction must not overwrite (a conflict, or a change
   made on the side being written) unless ``on_conflict`` picks a side; a reverse sync without ``confirm`` only
   shows its plan.
4. Apply (:mod:`~runbook_lib.steps.sync.apply`): forward into Qdrant; reverse into ChromaDB (a staged copy of a
   persistent directory, verified, then swapped in; a write into the live directory since the plan's snapshot
   stops the swap). The ledger follows each written batch.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runbook_lib.app.dual import journal_path_from_env
from runbook_lib.app.journal import Journal, JournalEntry
from runbook_lib.chroma import files as chroma_files
from runbook_lib.chroma.tenant import refuse_write_back
from runbook_lib.chroma.writer import ChromaWriter, refuse_mount_point, uninspectable_note
from runbook_lib.config.faults import fault_point
from runbook_lib.core.layouts import get_layout
from runbook_lib.errors import ConfigError
from runbook_lib.kernel.display import progress
from runbook_lib.kernel.step import Step
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.qdrant.connect import open_target
from runbook_lib.state.checkpoint import CHECKPOINT, Checkpoint, run_layout_params
from runbook_lib.state.identity import check_source_collections, check_stores, check_target_collections
from runbook_lib.state.ledger import Ledger, file_id
from runbook_lib.state.run import utc_now
from runbook_lib.steps.sync import apply
from runbook_lib.steps.sync.diff import CollectionDiff, diff_collection, resolve_by_journal
from runbook_lib.steps.sync.reader import SyncSource
from runbook_lib.steps.sync.result import SyncResult

log = logging.getLogger(__name__)

SNAPSHOT = "sync_snapshot"


def _snapshot(step: Step, name: str = SNAPSHOT) -> tuple[Path, dict[str, list[int]], str | None]:
    """A consistent copy of the live directory in the run's state folder (``name``, replacing the previous sync's),
    the live files' (size, mtime) when it was taken, so a verify can tell whether the app wrote after this sync,
    and which SQLite file it was copied from (:func:`~runbook_lib.state.ledger.file_id`)."""
    live = step.settings.chroma.require_persist_dir()
    final = step.run.state_dir / name
    partial = final.with_name(name + ".partial")
    for _attempt in range(3):
        shutil.rmtree(partial, ignore_errors=True)
        chroma_files.ensure_free_space(
            partial.parent,
            chroma_files.tree_size(live),
            "the sync snapshot",
            fix="free space on that disk: the snapshot is kept in the run folder under RUNBOOK_OUTPUTS (nothing was "
            "changed), then run this step again.",
        )
        live_file = file_id(live)
        before = chroma_files.stat_tree(live)
        chroma_files.copy_chroma_dir(live, partial)
        if chroma_files.stat_tree(live) == before and file_id(live) == live_file:
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
            return final, {name: list(v) for name, v in before.items()}, live_file
        log.info("%s changed while it was copied; copying it again", live)
    shutil.rmtree(partial, ignore_errors=True)
    raise ConfigError(
        f"{live} kept changing while the sync copied it: the app is writing continuously; run the sync again in a "
        "quieter moment (or pause the app's writes for the few seconds of the copy)."
    )


@dataclass(frozen=True)
class SyncOptions:
    """How to sync: the sync step's parameters, or what a rollback asks for (a reverse sync that keeps ChromaDB's
    own changes: ``keep_other_side``; then ``on_conflict`` decides the conflicts only, never the other side's own
    changes). ``snapshot`` names the folder in the run's ``state/`` that holds the copy of the live source read by
    this sync (a plan-only caller can use its own, so the last sync's copy, which verify reads, stays as it is)."""

    direction: str = "forward"
    on_conflict: str = "stop"
    confirm: bool = False
    batch_size: int = 256
    collections: tuple[str, ...] = ()
    keep_other_side: bool = False
    snapshot: str = SNAPSHOT
    full_compare: bool = False  # read every ChromaDB record, not only those its write sequence says were written
    count_uninspectable: bool = True  # a process that cannot be inspected counts as holding the directory


def _journal(step: Step) -> Journal | None:
    """The app's dual-write journal (``VECTOR_DB_JOURNAL``), when it exists."""
    path = journal_path_from_env(os.environ, step.settings)
    return Journal(path) if path.is_file() else None


def _replay_journal(journal: Journal, pending: list[JournalEntry], diffs: list[CollectionDiff], p: SyncOptions) -> int:
    """Drop the journal entries this sync resolved: writes the store it just brought up to date had missed, in
    collections it synchronised with nothing left aside. Only a prefix (by ``seq``) is dropped, never a gap."""
    written = "qdrant" if p.direction == "forward" else "chroma"
    complete = {
        d.collection
        for d in diffs
        if not d.conflicts or p.on_conflict == ("source" if p.direction == "forward" else "target")
    }
    upto = None
    for entry in sorted(pending, key=lambda e: e.seq):
        if entry.missed != written or entry.collection not in complete:
            break
        upto = entry.seq
    return journal.mark_replayed(upto) if upto is not None else 0


def _collections(step: Step, checkpoint: Checkpoint, requested: tuple[str, ...]) -> list[tuple[str, dict[str, Any]]]:
    states = checkpoint.data.get("collections", {})
    if not states:
        raise ConfigError(
            f"Run {step.run.run_id} has no migration to synchronise: run `runbook migrate --run-id "
            f"{step.run.run_id}` first (a sync brings a migrated run up to date)."
        )
    planned = checkpoint.data.get("planned") or list(states)
    wanted = list(requested) or planned
    unknown = [n for n in wanted if n not in planned]
    if unknown:
        raise ConfigError(
            f"Collection {unknown[0]!r} is not part of run {step.run.run_id} (it migrated {', '.join(planned)}): "
            "migrate it first, or leave it out of `collections`."
        )
    out = []
    for name in wanted:
        state = states.get(name, {})
        if state.get("status") == "skipped":
            continue
        if state.get("status") != "done":
            raise ConfigError(
                f"The migration of {name!r} in run {step.run.run_id} has not finished (status "
                f"{state.get('status', 'not started')!r}): resume it with `runbook migrate --run-id "
                f"{step.run.run_id}` before synchronising."
            )
        out.append((name, state))
    return out


def _decide(diffs: list[CollectionDiff], direction: str, on_conflict: str, keep_other_side: bool = False) -> list[str]:
    """Why this sync must stop before writing (empty: it may write)."""
    reasons = []
    conflicts = sum(len(d.conflicts) for d in diffs)
    if conflicts and on_conflict == "stop":
        first = next(f"{d.collection}/{d.conflicts[0]}" for d in diffs if d.conflicts)
        reasons.append(
            f"{conflicts} record(s) changed on both sides since the last sync (first: {first}); choose which side "
            "wins with -p on_conflict source or -p on_conflict target"
        )
    other = sum((d.qdrant if direction == "forward" else d.source).total() for d in diffs)
    if other and on_conflict == "stop" and not keep_other_side:
        where, fix, winner = (
            ("Qdrant", "run `-p direction reverse -p confirm true` first to bring them to ChromaDB", "source")
            if direction == "forward"
            else ("ChromaDB", "run a forward sync first to bring them to Qdrant", "target")
        )
        reasons.append(
            f"{other} record(s) were changed in {where} since the last sync and this direction would overwrite "
            f"them: {fix}, or pass -p on_conflict {winner} to overwrite them"
        )
    return reasons


def _work(
    diff: CollectionDiff, direction: str, on_conflict: str, keep_other_side: bool = False
) -> tuple[list[str], list[str]]:
    """(upserts, deletes) on the side being written, following the winner for conflicts and (unless
    ``keep_other_side``) for the other side's own changes."""
    if direction == "forward":
        mine, other, gone = diff.source, diff.qdrant, diff.conflict_gone_in_source
        wins = on_conflict == "source"
    else:
        mine, other, gone = diff.qdrant, diff.source, diff.conflict_gone_in_qdrant
        wins = on_conflict == "target"
    upserts, deletes = mine.upserts(), list(mine.deleted)
    if wins and not keep_other_side:  # put the other side back to how this side has it
        upserts += other.changed + other.deleted
        deletes += other.added
    if wins:
        upserts += [c for c in diff.conflicts if c not in gone]
        deletes += [c for c in diff.conflicts if c in gone]
    return sorted(upserts), sorted(deletes)


#: direction -> (the ``on_conflict`` that keeps the store this direction does not write, that store, the store it
#: writes, the other direction and how to run it, the ``on_conflict`` that fits this direction)
_MISMATCHED = {
    "forward": ("target", "Qdrant", "ChromaDB", "reverse sync (-p direction reverse -p confirm true)", "source"),
    "reverse": ("source", "ChromaDB", "Qdrant", "forward sync (-p direction forward)", "target"),
}


def _refuse_mismatched_winner(direction: str, on_conflict: str) -> None:
    """A sync writes one store only: a winner whose version it cannot carry over is refused before anything."""
    wins, kept, other, run_other, fits = _MISMATCHED[direction]
    if on_conflict != wins:
        return
    written = "ChromaDB" if direction == "reverse" else "Qdrant"
    raise ConfigError(
        f"on_conflict={on_conflict} keeps {kept}'s version, which a {direction} sync cannot carry into {other} (it "
        f"writes only into {written}): run the {run_other} with -p on_conflict {on_conflict}, or pass -p on_conflict "
        f"{fits} to write {other}'s version into {written} (nothing was written)."
    )


def sync(step: Step) -> SyncResult:
    """The sync step (``06_sync.ipynb``)."""
    sp = step.params
    _refuse_mismatched_winner(sp.direction, sp.on_conflict)
    opts = SyncOptions(
        direction=sp.direction,
        on_conflict=sp.on_conflict,
        confirm=sp.confirm,
        batch_size=sp.batch_size,
        collections=tuple(sp.collections),
        full_compare=sp.full_compare,
        count_uninspectable=sp.uninspectable != "ignore",
    )
    return run_sync(step, opts)


def run_sync(step: Step, p: SyncOptions) -> SyncResult:
    """Plan, and (when allowed) apply, a sync of ``step``'s run; used by the sync and rollback steps."""
    t0 = time.perf_counter()
    checkpoint = Checkpoint(step.run.state_dir / CHECKPOINT)
    if p.direction == "reverse":  # into one database only (also a rollback's bring-back), before a store is opened
        refuse_write_back(step.settings.chroma, (checkpoint.data.get("stores") or {}).get("source"))
    todo = _collections(step, checkpoint, p.collections)
    run_id = step.run.run_id
    store_note = check_stores(run_id, checkpoint.data, step.settings)  # before either store is opened
    layout = get_layout(*run_layout_params(checkpoint.data))  # type: ignore[arg-type]
    result = SyncResult(ok=True, direction=p.direction, on_conflict=p.on_conflict)
    result.warnings += [store_note] if store_note else []
    journal = _journal(step)
    pending = journal.pending() if journal is not None else []
    if pending:
        result.warnings.append(
            f"The app's dual-write journal ({journal.path if journal else ''}) lists {len(pending)} write(s) one "
            "store missed; this sync's full comparison carries them over and then clears them from the journal."
        )
    chroma = step.settings.chroma
    if p.direction == "reverse" and not chroma.is_server and chroma.persist_dir.is_dir():  # the plan says it
        refuse_mount_point(chroma.persist_dir)  # its swap could never be made: refused before anything is copied
        note = uninspectable_note(chroma.persist_dir, count_uninspectable=p.count_uninspectable)
        result.warnings += [note] if note else []
    with open_target(step.settings.qdrant) as target, Ledger.for_run(step.run.state_dir, create=False) as ledger:
        # read into a candidate: it becomes the run's "source as of the last sync" only if this sync completes
        snapshot, live_stats, live_file = (
            (None, None, None) if chroma.is_server else _snapshot(step, f"{p.snapshot}.candidate")
        )
        result.snapshot = str(snapshot) if snapshot else None
        source = SyncSource(chroma, snapshot)
        try:
            check_source_collections(run_id, todo, source.collection_id)
            check_target_collections(run_id, target, ledger, todo)
            diffs = []
            for name, state in todo:
                bar = progress(desc=f"plan {name}", unit="rec", leave=False)
                diffs.append(
                    diff_collection(
                        source,
                        target,
                        ledger,
                        name,
                        state["target"],
                        cosine=state.get("distance") == "Cosine",
                        dimension=state.get("dimension"),
                        batch_size=p.batch_size,
                        on_batch=bar.update,
                        layout=layout,
                        catalog=source.catalog,
                        full=p.full_compare,
                        live_file=live_file,
                    )
                )
                bar.close()
                source.release()
            if pending and (settled := resolve_by_journal(diffs, pending, ledger)):
                result.warnings.append(
                    f"{settled} record(s) changed on both sides are not conflicts: the dual-write journal says which "
                    "store missed a write of each, so the other store's version (the app's latest) is carried over."
                )
            result.collections = [d.summary() for d in diffs]
            result.blocked = _decide(diffs, p.direction, p.on_conflict, p.keep_other_side)
            if result.blocked:
                result.ok = False
            elif p.direction == "reverse" and not p.confirm:
                result.plan_only = True
            else:
                _apply(step, p, source, target, ledger, diffs, result, live_stats)
        finally:
            source.close()
            _settle_snapshot(step, p, snapshot, result)
    if result.applied and journal is not None and pending and not result.blocked:
        result.journal_replayed = _replay_journal(journal, pending, diffs, p)
    if result.applied:  # a completed sync, even one with nothing to do: verify reads the source as of it
        checkpoint.data["sync"] = {
            "synced_at": utc_now(),
            "direction": p.direction,
            "snapshot": result.snapshot,
            "live_stats": result.live_stats or live_stats,
            "records_applied": result.totals()["applied"],
        }
        checkpoint.save()
    result.seconds = time.perf_counter() - t0
    return result


def _settle_snapshot(step: Step, p: SyncOptions, candidate: Path | None, result: SyncResult) -> None:
    """A completed sync's candidate snapshot replaces the run's snapshot (unless a reverse sync already took a new
    one of the directory it wrote); a plan, a stopped or a failed sync leaves the previous snapshot as it was."""
    if candidate is None:
        return
    final = step.run.state_dir / p.snapshot
    if result.applied and result.snapshot == str(candidate):
        shutil.rmtree(final, ignore_errors=True)
        candidate.rename(final)
        result.snapshot = str(final)
    else:
        shutil.rmtree(candidate, ignore_errors=True)


def _apply(
    step: Step,
    p: SyncOptions,
    source: SyncSource,
    target: QdrantStore,
    ledger: Ledger,
    diffs: list[CollectionDiff],
    result: SyncResult,
    planned_from: dict[str, list[int]] | None,
) -> None:
    """Write the plan into the side it is for; ``planned_from``: the live files when the plan's snapshot was taken
    (a write into a persistent directory since then stops the swap)."""
    work = {d.collection: _work(d, p.direction, p.on_conflict, p.keep_other_side) for d in diffs}
    total = sum(len(u) + len(d) for u, d in work.values())
    bar = progress(total=total, desc=f"sync {p.direction}", unit="rec")
    if p.direction == "forward":
        for diff, summary in zip(diffs, result.collections, strict=True):
            upserts, deletes = work[diff.collection]
            apply.refresh_ledger(ledger, diff)
            apply.to_qdrant(
                source,
                target,
                ledger,
                diff,
                upserts=upserts,
                deletes=deletes,
                batch_size=p.batch_size,
                on_batch=bar.update,
            )
            summary["applied"] = len(upserts) + len(deletes)
            source.release()
    elif total == 0:  # nothing to write into ChromaDB: no staged copy, no swap; only the ledger catches up
        for diff, summary in zip(diffs, result.collections, strict=True):
            apply.refresh_ledger(ledger, diff)
            summary["applied"] = 0
    else:
        fault_point("sync:planned")
        writer = ChromaWriter.open(
            step.settings.chroma,
            planned_from={k: (v[0], v[1]) for k, v in planned_from.items()} if planned_from else None,
            count_uninspectable=p.count_uninspectable,
        )
        pending: list[tuple[CollectionDiff, Any, list[str]]] = []
        try:
            for diff, summary in zip(diffs, result.collections, strict=True):
                upserts, deletes = work[diff.collection]
                rows, deleted = apply.to_chroma(
                    target,
                    writer,
                    diff,
                    upserts=upserts,
                    deletes=deletes,
                    batch_size=p.batch_size,
                    on_batch=bar.update,
                )
                pending.append((diff, rows, deleted))
                summary["applied"] = len(upserts) + len(deletes)
            previous = writer.commit()
        except BaseException:
            writer.discard()
            raise
        result.previous_dir = str(previous) if previous else None
        for diff, rows, deleted in pending:  # the ledger follows only once ChromaDB holds the writes
            apply.refresh_ledger(ledger, diff)
            ledger.put(diff.collection, rows)
            ledger.delete(diff.collection, deleted)
        if previous is not None:  # ChromaDB changed: the source as of this sync is the new directory
            snap, result.live_stats, live_file = _snapshot(step, p.snapshot)
            ledger.set_file_id(live_file)  # its own staged copy: the same timeline, in another SQLite file
            result.snapshot = str(snap)
    bar.close()
    result.applied = True
    overwrites = p.on_conflict == ("source" if p.direction == "forward" else "target")
    result.kept_conflicts = {d.collection: list(d.conflicts) for d in diffs if d.conflicts and not overwrites}

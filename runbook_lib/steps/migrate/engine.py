"""The migration: backup, create target collections, copy every record, count check.

Reading and writing overlap: a reader thread fetches batches from ChromaDB and maps them to points
into a bounded queue; the writer side upserts them (``workers`` requests in flight on a server; one
in local mode, whose storage is single-threaded). Memory is bounded by ``batch_size * (queue +
workers)`` records. A per-collection checkpoint records how many of the collection's (sorted) ids
are written, so a killed run restarted with the same run id skips finished collections and batches;
point ids are deterministic, so re-written batches overwrite and never duplicate.

The step's result is :mod:`runbook_lib.steps.migrate.result`; its chart :mod:`runbook_lib.steps.migrate.charts`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runbook_lib.core.fingerprint import Fingerprint, fingerprints
from runbook_lib.core.mapping import build_payload, normalise_rows, point_id
from runbook_lib.core.plan import PlanEntry
from runbook_lib.errors import (
    DimensionMismatchError,
    ExistingCollectionError,
    MigrationError,
    RunbookError,
    SourceError,
)
from runbook_lib.runtime.display import progress
from runbook_lib.runtime.step import Step
from runbook_lib.source.backup import Backup, create_backup, load_backup, verify_backup
from runbook_lib.source.chroma import ChromaSource, RecordBatch
from runbook_lib.state.checkpoint import CHECKPOINT, Checkpoint
from runbook_lib.state.ledger import Ledger
from runbook_lib.steps.migrate.charts import migrate_charts
from runbook_lib.steps.migrate.preflight import Planned, check_shape, existing_collection_error, preflight
from runbook_lib.steps.migrate.result import MigrationResult
from runbook_lib.target.qdrant import QdrantTarget

log = logging.getLogger(__name__)


@dataclass
class Points:
    """One batch mapped to Qdrant points, ready to upsert."""

    index: int
    ids: list[str]
    vectors: np.ndarray  # (n, dim) float32; QdrantTarget.upsert converts it once, outside its retries
    payloads: list[dict[str, Any]]
    chroma_ids: list[str] = field(default_factory=list)
    fingerprints: list[Fingerprint] = field(default_factory=list)  # for the run's ledger (what sync compares)


def to_points(index: int, batch: RecordBatch, *, normalise: bool = False) -> Points:
    """Map a batch to points. ``normalise`` (Cosine collections) writes unit vectors, as a Qdrant server
    stores them; qdrant-client's local mode would otherwise persist the raw vector to disk. The records'
    fingerprints are taken here, in the pass that already holds them."""
    vectors = normalise_rows(batch.embeddings) if normalise else batch.embeddings
    return Points(
        index=index,
        ids=[point_id(i) for i in batch.ids],
        vectors=vectors,
        payloads=[
            build_payload(i, d, m, u)
            for i, d, m, u in zip(batch.ids, batch.documents, batch.metadatas, batch.uris, strict=True)
        ],
        chroma_ids=list(batch.ids),
        fingerprints=fingerprints(
            batch.embeddings, batch.documents, batch.metadatas, batch.uris, cosine=normalise, target_vectors=vectors
        ),
    )


# --- copying one collection ------------------------------------------------------------------------
_DONE = object()


def copy_collection(
    source: ChromaSource,
    target: QdrantTarget,
    entry: PlanEntry,
    *,
    ids: list[str],
    start: int,
    batch_size: int,
    workers: int,
    on_progress: Any,
    ledger: Ledger | None = None,
) -> None:
    """Copy ``ids[start:]`` in batches. ``on_progress(records_done_contiguous, n_in_batch)`` is called
    as batches complete; ``records_done_contiguous`` only counts an unbroken prefix of ``ids``. Each written
    batch's fingerprints go to ``ledger`` (after the write, so the ledger never claims an unwritten record)."""
    starts = list(range(start, len(ids), batch_size))
    if not starts:
        return
    stop = threading.Event()
    q: queue.Queue[Any] = queue.Queue(maxsize=max(2, workers * 2))
    reader_error: list[BaseException] = []

    def reader() -> None:
        try:
            for index, s in enumerate(starts):
                if stop.is_set():
                    return
                batch = source.fetch(entry.source, ids[s : s + batch_size], expected_dim=entry.dimension)
                item = to_points(index, batch, normalise=entry.distance == "Cosine")
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.2)
                        break
                    except queue.Full:
                        continue
        except BaseException as exc:
            reader_error.append(exc)
        finally:
            while not stop.is_set():
                try:
                    q.put(_DONE, timeout=0.2)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=reader, name=f"read-{entry.source}", daemon=True)
    thread.start()
    done_flags = [False] * len(starts)
    watermark = 0

    def complete(item: Points) -> None:
        nonlocal watermark
        if ledger is not None:
            ledger.put(entry.source, zip(item.chroma_ids, item.fingerprints, strict=True))
        done_flags[item.index] = True
        while watermark < len(starts) and done_flags[watermark]:
            watermark += 1
        contiguous = starts[watermark] if watermark < len(starts) else len(ids)
        on_progress(contiguous, len(item.ids))

    def write(item: Points) -> Points:
        target.upsert(
            entry.target,
            item.ids,
            item.vectors,
            item.payloads,
            batch_label=f"batch {item.index + 1 + start // batch_size} (records {starts[item.index]}-"
            f"{starts[item.index] + len(item.ids) - 1})",
        )
        return item

    parallel = workers > 1 and not target.is_local
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upsert") if parallel else None
    in_flight: set[Future[Points]] = set()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                break
            if pool is None:
                complete(write(item))
                continue
            in_flight.add(pool.submit(write, item))
            if len(in_flight) >= workers:
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for fut in finished:
                    complete(fut.result())
        for fut in in_flight:
            complete(fut.result())
    finally:
        stop.set()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        thread.join(timeout=30)
    if reader_error:
        raise reader_error[0]


# --- the step --------------------------------------------------------------------------------------
def _prepare_source(step: Step, checkpoint: Checkpoint) -> tuple[ChromaSource, Backup | None]:
    chroma = step.settings.chroma
    if chroma.is_server:
        return ChromaSource.open(chroma), None
    persist_dir = chroma.require_persist_dir()
    backup_path = checkpoint.data.get("backup_path")
    if backup_path:
        backup = load_backup(Path(backup_path))
        verify_backup(backup)
        log.info("resuming: reusing verified backup %s", backup.path)
    else:
        log.info("backing up %s", persist_dir)
        backup = create_backup(persist_dir, step.run.run_id)
        checkpoint.data["backup_path"] = str(backup.path)
        checkpoint.save()
    return ChromaSource.open(chroma, copy_from=backup.data_dir), backup


def _ensure_target(target: QdrantTarget, entry: PlanEntry, state: dict[str, Any], on_existing: str, p: Any) -> None:
    if state.get("created_by_run") and target.exists(entry.target):
        check_shape(target, entry)
        return
    if target.exists(entry.target):
        if on_existing == "fail":
            raise existing_collection_error(entry.target)
        if on_existing == "resume":
            check_shape(target, entry)
            state["created_by_run"] = False
            return
        state["replaced_existing"] = True
        target.delete_collection(entry.target)
    assert entry.dimension is not None
    target.create_collection(
        entry.target,
        size=entry.dimension,
        distance=entry.distance,
        shard_number=p.shard_number,
        replication_factor=p.replication_factor,
        write_consistency_factor=p.write_consistency_factor,
        defer_indexing=p.defer_indexing,
    )
    state["created_by_run"] = True


def migrate(step: Step) -> MigrationResult:
    """The migrate step (``02_migrate.ipynb``).

    Everything checkable is checked (:mod:`runbook_lib.steps.migrate.preflight`) before the backup is
    made and before the first point is written, so a ConfigError (exit 2) means nothing changed.
    """
    p = step.params
    t0 = time.perf_counter()
    checkpoint = Checkpoint(step.run.state_dir / CHECKPOINT)
    checkpoint.data.setdefault("target", step.settings.qdrant.describe())
    chroma = step.settings.chroma
    with QdrantTarget(step.settings.qdrant) as target:  # the target is reachable before anything changes
        if not chroma.is_server and not checkpoint.data.get("backup_path"):
            with ChromaSource.open(chroma) as live:  # a scratch copy of the live directory, before the backup
                _record_plan(checkpoint, _preflight(step, live, target, checkpoint))
        source, backup = _prepare_source(step, checkpoint)
        try:
            # checked again on what is actually read (the backup): this id snapshot is the one copied
            planned = _preflight(step, source, target, checkpoint)
            _record_plan(checkpoint, planned)
            result = MigrationResult(ok=True, backup=backup.summary() if backup else None)
            if source.upgraded_on_open:
                result.warnings.append(
                    "The source was written by an older chromadb: the scratch copy was upgraded to read it; the "
                    "live directory and the backup are untouched."
                )
            if backup is None:
                result.warnings.append(
                    "The source is a Chroma server: no file backup was taken (back the server up yourself)."
                )
            overall = progress(total=sum(pl.entry.count for pl in planned), desc="all collections", unit="rec")
            ledger = Ledger.for_run(step.run.state_dir)
            for pl in planned:
                entry = pl.entry
                state = checkpoint.entry(entry.source)
                state.update(
                    target=entry.target,
                    alias=entry.alias,
                    source_count=entry.count,
                    dimension=entry.dimension,
                    distance=entry.distance,
                )
                row = _migrate_one(source, target, entry, pl.ids, state, checkpoint, p, overall, result, ledger)
                result.rows.append(row)
                result.total_records += row["records"] if row["status"] == "done" else 0
                source.release()  # memory follows the largest collection, not the database
            overall.close()
            ledger.close()
        finally:
            source.close()
    result.seconds = time.perf_counter() - t0
    result.ok = not result.errors
    result.figures = migrate_charts(step, result)
    return result


def _preflight(step: Step, source: ChromaSource, target: QdrantTarget, checkpoint: Checkpoint) -> list[Planned]:
    return preflight(source, target, step.params, run_id=step.run.run_id, states=checkpoint.data["collections"])


def _record_plan(checkpoint: Checkpoint, planned: list[Planned]) -> None:
    """``planned``: the source collections this run migrates, in order, saved before anything is copied
    (so verify can fail a run that stopped between collections)."""
    checkpoint.data["planned"] = [pl.entry.source for pl in planned]
    checkpoint.save()


def _migrate_one(
    source: ChromaSource,
    target: QdrantTarget,
    entry: PlanEntry,
    ids: list[str],
    state: dict[str, Any],
    checkpoint: Checkpoint,
    p: Any,
    overall: Any,
    result: MigrationResult,
    ledger: Ledger | None = None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "collection": entry.source,
        "target": entry.target,
        "distance": entry.distance,
        "dimension": entry.dimension,
        "records": entry.count,
        "seconds": 0.0,
        "records_per_s": None,
        "target_count": None,
        "status": "pending",
    }
    if entry.dimension is None:
        row["status"] = "skipped (empty)"
        result.warnings.append(
            f"Collection {entry.source!r} is empty and has no dimension: nothing was created in Qdrant."
        )
        state["status"] = "skipped"
        checkpoint.save()
        return row
    t0 = time.perf_counter()
    try:
        _ensure_target(target, entry, state, p.on_existing, p)
        checkpoint.save()
        if state.get("status") != "done":
            start = int(state.get("records_done", 0)) if state.get("status") == "copying" else 0
            state["status"] = "copying"
            overall.update(start)
            bar = progress(total=len(ids), initial=start, desc=entry.source, unit="rec", leave=False)

            def on_progress(contiguous: int, n: int) -> None:
                state["records_done"] = contiguous
                checkpoint.save()
                bar.update(n)
                overall.update(n)

            copy_collection(
                source,
                target,
                entry,
                ids=ids,
                start=start,
                batch_size=p.batch_size,
                workers=p.workers,
                on_progress=on_progress,
                ledger=ledger,
            )
            bar.close()
            target.finish_bulk_load(entry.target)
        else:
            overall.update(entry.count)
        found = target.count(entry.target)
        row["target_count"] = found
        if found != entry.count:
            raise MigrationError(
                f"Count check failed for {entry.source!r}: ChromaDB has {entry.count} records, Qdrant collection "
                f"{entry.target!r} has {found} points.",
                collection=entry.source,
            )
        if entry.alias:
            before = target.aliases().get(entry.alias)
            state.setdefault("alias_previous", before)
            checkpoint.save()
            target.set_alias(entry.alias, entry.target)
            state["alias_set"] = True
        state["status"] = "done"
        checkpoint.save()
        row["status"] = "done"
    except (DimensionMismatchError, SourceError, MigrationError) as exc:
        row["status"] = "failed"
        result.errors.append(str(exc))
        state["status"] = "failed"
        checkpoint.save()
    except ExistingCollectionError:
        raise
    except RunbookError:
        state["status"] = "failed"
        checkpoint.save()
        raise
    elapsed = time.perf_counter() - t0
    row["seconds"] = round(elapsed, 3)
    row["records_per_s"] = round(entry.count / elapsed, 1) if elapsed > 0 and entry.count else None
    log.info("%s -> %s: %s (%d records, %.1f s)", entry.source, entry.target, row["status"], entry.count, elapsed)
    return row

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

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

from runbook_lib.chroma.backup import Backup, create_backup, load_backup, verify_backup
from runbook_lib.chroma.base import ChromaReader
from runbook_lib.chroma.catalog import Catalog, CatalogUnavailable
from runbook_lib.chroma.connect import open_source
from runbook_lib.chroma.tenant import check_collection_cap
from runbook_lib.config.faults import fault_point
from runbook_lib.core.layouts import Layout, get_layout
from runbook_lib.core.payload_indexes import PayloadIndex
from runbook_lib.core.plan import PlanEntry
from runbook_lib.errors import (
    ConfigError,
    DimensionMismatchError,
    ExistingCollectionError,
    MigrationError,
    RunbookError,
    SourceError,
)
from runbook_lib.kernel.display import progress
from runbook_lib.kernel.step import Step
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.qdrant.connect import open_target
from runbook_lib.qdrant.target import DEFAULT_INDEXING_THRESHOLD
from runbook_lib.state.checkpoint import CHECKPOINT, Checkpoint
from runbook_lib.state.identity import check_stores, record_stores
from runbook_lib.state.ledger import Ledger, Marker, file_id
from runbook_lib.state.run import write_json
from runbook_lib.steps.migrate.charts import migrate_charts
from runbook_lib.steps.migrate.pipeline import copy_collection
from runbook_lib.steps.migrate.preflight import (
    Planned,
    check_capabilities,
    check_shape,
    existing_collection_error,
    preflight,
)
from runbook_lib.steps.migrate.result import MigrationResult
from runbook_lib.steps.migrate.shape import create_indexes, hnsw_params, plan_indexes

log = logging.getLogger(__name__)


# --- the step --------------------------------------------------------------------------------------
def _prepare_source(step: Step, checkpoint: Checkpoint) -> tuple[ChromaReader, Backup | None]:
    chroma = step.settings.chroma
    if chroma.is_server:
        return open_source(chroma), None
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
    return open_source(chroma, copy_from=backup.data_dir), backup


def _ensure_target(
    target: QdrantStore,
    source: ChromaReader,
    entry: PlanEntry,
    ids: list[str],
    state: dict[str, Any],
    p: Any,
    layout: Layout,
    save: Any = None,
) -> None:
    """The target collection exists with the right shape, its payload indexes made before the first point. A
    collection this run creates is recorded as the run's (``save``: the checkpoint's) before it is created, so a
    crash right after the creation leaves a resume that knows it, indexing to restore included."""
    if state.get("created_by_run") and target.exists(entry.target):
        check_shape(target, entry)
    elif target.exists(entry.target):
        if p.on_existing == "fail":
            raise existing_collection_error(entry.target)
        if p.on_existing == "resume":
            check_shape(target, entry)
            state["created_by_run"] = False
        else:
            state["replaced_existing"] = True
            target.delete_collection(entry.target)
    if not target.exists(entry.target):
        assert entry.dimension is not None
        info = source.info(entry.source)
        state["hnsw"] = hnsw_params(info.configuration, info.metadata)
        state["created_by_run"] = True  # recorded first; the threshold to restore is provisional until it is read
        state["indexing_restore"] = DEFAULT_INDEXING_THRESHOLD if p.defer_indexing else None
        if save is not None:
            save()
        state["indexing_restore"] = target.create_collection(
            entry.target,
            size=entry.dimension,
            distance=entry.distance,
            shard_number=p.shard_number,
            replication_factor=p.replication_factor,
            write_consistency_factor=p.write_consistency_factor,
            defer_indexing=p.defer_indexing,
            hnsw=state["hnsw"] or None,
        )
        fault_point("migrate:collection-created")
    if "payload_indexes" not in state:  # planned once, from the snapshot being copied; a resumed run keeps it
        planned = plan_indexes(source, entry.source, ids, p.payload_indexes, layout, p.batch_size)
        state["payload_indexes"] = [index.to_dict() for index in planned]
    create_indexes(target, entry.target, [PayloadIndex.from_dict(d) for d in state["payload_indexes"]])


def migrate(step: Step) -> MigrationResult:
    """The migrate step (``02_migrate.ipynb``).

    Everything checkable is checked (:mod:`runbook_lib.steps.migrate.preflight`) before the backup is
    made and before the first point is written, so a ConfigError (exit 2) means nothing changed.
    """
    p = step.params
    t0 = time.perf_counter()
    checkpoint = Checkpoint(step.run.state_dir / CHECKPOINT)
    checkpoint.data.setdefault("target", step.settings.qdrant.describe())
    check_stores(step.run.run_id, checkpoint.data, step.settings, moved_target=False)  # a resume: the same stores
    record_stores(checkpoint.data, step.settings)
    layout = _run_layout(checkpoint, p)
    chroma = step.settings.chroma
    with open_target(step.settings.qdrant) as target:  # the target is reachable before anything changes
        check_capabilities(target, p)
        fresh_backup = not chroma.is_server and not checkpoint.data.get("backup_path")
        if fresh_backup:
            _record_plan(checkpoint, _check_before_backup(step, target, checkpoint))
        source, backup = _prepare_source(step, checkpoint)
        try:
            # checked again on what is actually read (the backup): this id snapshot is the one copied
            try:
                planned = _preflight(step, source, target, checkpoint)
            except RunbookError:
                if fresh_backup and backup is not None:  # nothing was written: leave nothing, not even the backup
                    source.close()
                    _discard_backup(backup, checkpoint)
                raise
            _record_plan(checkpoint, planned)
            result = MigrationResult(ok=True, backup=backup.summary() if backup else None)
            if source.upgraded_on_open:
                result.warnings.append(
                    "The source was written by an older chromadb: the scratch copy was upgraded to read it; the "
                    "live directory and the backup are untouched."
                )
            if backup is None:
                result.warnings.append(
                    f"The source is {'Chroma Cloud' if chroma.is_cloud else 'a Chroma server'}: no file backup was "
                    "taken (back it up yourself)."
                )
            _record_embedding_functions(step, source, planned, checkpoint)
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
                    source_uuid=source.collection_id(entry.source),
                )
                row = _migrate_one(source, target, entry, pl.ids, state, checkpoint, p, overall, result, ledger, layout)
                result.rows.append(row)
                result.total_records += row["records"] if row["status"] == "done" else 0
                if backup is not None and row["status"] == "done":
                    _record_sequences(ledger, backup.data_dir, entry.source, chroma, file_id(chroma.persist_dir))
                source.release()  # memory follows the largest collection, not the database
            overall.close()
            ledger.close()
        finally:
            result_read = source.read_summary()
            source.close()
    result.source_read = result_read
    result.seconds = time.perf_counter() - t0
    result.ok = not result.errors
    result.figures = migrate_charts(step, result)
    return result


#: The run's record of each collection's embedding function (what the app's compat client rebuilds for
#: ``query_texts``), next to the run's results: ``{collection name the app uses: {"name", "config"}}``.
EMBEDDING_FUNCTIONS_FILE = "embedding_functions.json"


def _record_embedding_functions(
    step: Step, source: ChromaReader, planned: list[Planned], checkpoint: Checkpoint
) -> None:
    """Record the embedding function Chroma keeps in each planned collection's configuration, in the checkpoint
    and in the run's ``embedding_functions.json`` (under the source name, and the alias and target the app may use)."""
    recorded: dict[str, Any] = {}
    for pl in planned:
        entry = pl.entry
        function = source.embedding_function(entry.source)
        checkpoint.entry(entry.source)["embedding_function"] = function
        if function is not None:
            for name in {entry.source, entry.alias, entry.target} - {None}:
                recorded[name] = function
    checkpoint.save()
    path = step.run.dir / EMBEDDING_FUNCTIONS_FILE
    previous = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    write_json(path, {**previous, **recorded})


def _record_sequences(ledger: Ledger, data_dir: Path, name: str, chroma: Any, live_file: str | None) -> None:
    """Give the ledger ChromaDB's write sequence numbers of the state just copied (the backup's, taken from the
    live SQLite file ``live_file``), so the first sync reads only what the app wrote since. Without them (an
    unknown catalog layout) that sync reads everything."""
    try:
        with Catalog(data_dir, tenant=chroma.tenant, database=chroma.database) as catalog:
            sequences = catalog.sequences(name)
            segment, last = catalog.sequence_marker(name)
            marker = Marker(segment, last, live_file, catalog.row_digest(name, last))
    except CatalogUnavailable:
        return
    ledger.stamp_all(name, sequences)
    ledger.set_marker(name, marker)


def _run_layout(checkpoint: Checkpoint, p: Any) -> Layout:
    """The run's payload layout, recorded in the checkpoint (what verify, sync and the app read); a resumed run
    must keep the layout it started with."""
    chosen = {"payload_layout": p.payload_layout, "null_documents": p.null_documents}
    recorded = {k: checkpoint.data.get(k, "runbook" if k == "payload_layout" else "refuse") for k in chosen}
    if checkpoint.data.get("collections") and recorded != chosen:
        raise ConfigError(
            f"Run was migrated with payload_layout={recorded['payload_layout']} null_documents="
            f"{recorded['null_documents']}: resume it with the same parameters (or start a new run). "
            "Nothing was changed."
        )
    checkpoint.data.update(chosen)
    return get_layout(p.payload_layout, p.null_documents)


def _check_before_backup(step: Step, target: QdrantStore, checkpoint: Checkpoint) -> list[Planned]:
    """The checks that need no copy of the source: names and ids read from SQLite in read-only mode. A database
    whose layout the catalog reader does not know is checked on a scratch copy instead."""
    chroma = step.settings.chroma
    try:
        with Catalog(chroma.require_persist_dir(), tenant=chroma.tenant, database=chroma.database) as catalog:
            return preflight(
                catalog, target, step.params, run_id=step.run.run_id, states=checkpoint.data["collections"]
            )
    except CatalogUnavailable as exc:
        log.info("checking on a scratch copy (%s)", exc)
        with open_source(chroma) as live:
            return _preflight(step, live, target, checkpoint)


def _discard_backup(backup: Backup, checkpoint: Checkpoint) -> None:
    shutil.rmtree(backup.path, ignore_errors=True)
    checkpoint.data.pop("backup_path", None)
    checkpoint.save()


def _preflight(step: Step, source: ChromaReader, target: QdrantStore, checkpoint: Checkpoint) -> list[Planned]:
    if step.settings.qdrant.is_server:  # Qdrant Cloud's cap on collections, before any id is read
        names = source.resolve_collections(step.params.collections)
        existing = set(target.collection_names())
        check_collection_cap(len(set(names) - existing), len(existing))
    return preflight(source, target, step.params, run_id=step.run.run_id, states=checkpoint.data["collections"])


def _record_plan(checkpoint: Checkpoint, planned: list[Planned]) -> None:
    """``planned``: the source collections this run migrates, in order, saved before anything is copied
    (so verify can fail a run that stopped between collections)."""
    checkpoint.data["planned"] = [pl.entry.source for pl in planned]
    checkpoint.save()


def _migrate_one(
    source: ChromaReader,
    target: QdrantStore,
    entry: PlanEntry,
    ids: list[str],
    state: dict[str, Any],
    checkpoint: Checkpoint,
    p: Any,
    overall: Any,
    result: MigrationResult,
    ledger: Ledger | None = None,
    layout: Layout | None = None,
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
        _ensure_target(target, source, entry, ids, state, p, layout or get_layout(), checkpoint.save)
        checkpoint.save()
        if state.get("status") != "done":
            start = int(state.get("records_done", 0)) if state.get("status") == "copying" else 0
            state["status"] = "copying"
            overall.update(start)
            bar = progress(total=len(ids), initial=start, desc=entry.source, unit="rec", leave=False)

            def on_substituted(n: int) -> None:
                state["null_documents_as_empty"] = int(state.get("null_documents_as_empty", 0)) + n

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
                flush_every_s=p.flush_every_s,
                on_progress=on_progress,
                ledger=ledger,
                layout=layout,
                on_substituted=on_substituted,
            )
            bar.close()
            target.finish_bulk_load(
                entry.target, restore_to=state.get("indexing_restore") if state.get("created_by_run") else None
            )
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
        if state.get("null_documents_as_empty"):
            row["null_documents_as_empty"] = state["null_documents_as_empty"]
            result.warnings.append(
                f"Collection {entry.source!r}: {state['null_documents_as_empty']:,} null documents were written as "
                f'"" (null_documents=empty, payload_layout={layout.name if layout else "runbook"}).'
            )
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
    # a finished collection is in the step's table right after its verdict: its line would only push the verdict down
    level = logging.DEBUG if row["status"] == "done" else logging.INFO
    log.log(level, "%s -> %s: %s (%d records, %.1f s)", entry.source, entry.target, row["status"], entry.count, elapsed)
    return row

"""The copy pipeline: a reader thread maps ChromaDB batches to Qdrant points (and the ledger's fingerprints, in the
same pass) into a bounded queue; the writer side upserts them (``workers`` in flight on a server, one in local
mode and on Edge), flushes what it wrote every ``FLUSH_EVERY_S`` and then reports a contiguous watermark for the
checkpoint. Memory is bounded by ``batch_size * (queue +
workers)`` records."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runbook_lib.chroma.base import ChromaReader, RecordBatch
from runbook_lib.core.fingerprint import Fingerprint, fingerprints
from runbook_lib.core.layouts import Layout
from runbook_lib.core.plan import PlanEntry
from runbook_lib.core.points import build_points
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.state.ledger import Ledger


@dataclass
class Points:
    """One batch mapped to Qdrant points, ready to upsert."""

    index: int
    ids: list[str]
    vectors: np.ndarray  # (n, dim) float32; QdrantStore.upsert converts it once, outside its retries
    payloads: list[dict[str, Any]]
    chroma_ids: list[str] = field(default_factory=list)
    fingerprints: list[Fingerprint] = field(default_factory=list)  # for the run's ledger (what sync compares)
    substituted: int = 0  # null documents written as "" (the layout's null_documents=empty)


def to_points(index: int, batch: RecordBatch, *, normalise: bool = False, layout: Layout | None = None) -> Points:
    """Map a batch to points. ``normalise`` (Cosine collections) writes unit vectors, as a Qdrant server
    stores them; qdrant-client's local mode would otherwise persist the raw vector to disk. The records'
    fingerprints are taken here, in the pass that already holds them. ``layout`` (default: the SPEC layout)
    shapes the payloads; a record it cannot carry raises :class:`~runbook_lib.core.layouts.LayoutError` before
    the batch is written."""
    layout = layout or Layout()
    ids, vectors, payloads = build_points(
        batch.ids, batch.embeddings, batch.documents, batch.metadatas, batch.uris, cosine=normalise, layout=layout
    )
    return Points(
        index=index,
        ids=ids,
        vectors=vectors,
        payloads=payloads,
        chroma_ids=list(batch.ids),
        fingerprints=fingerprints(
            batch.embeddings,
            layout.written_documents(batch.documents, batch.metadatas),
            batch.metadatas,
            batch.uris,
            cosine=normalise,
            target_vectors=vectors,
        ),
        substituted=sum(layout.substitutes(d, m) for d, m in zip(batch.documents, batch.metadatas, strict=True)),
    )


# --- copying one collection ------------------------------------------------------------------------
_DONE = object()
#: Written batches are made durable (``flush``) and then recorded (ledger, checkpoint) together, at most this often
#: (seconds) and always at the end or before a failure is raised: on Qdrant Edge a flush per batch (an fsync each,
#: holding the GIL) cost more than the upserts. A crash loses at most this much work, which the resume copies again
#: (upserts are idempotent); the checkpoint never records an unflushed batch.
FLUSH_EVERY_S = 5.0


def copy_collection(
    source: ChromaReader,
    target: QdrantStore,
    entry: PlanEntry,
    *,
    ids: list[str],
    start: int,
    batch_size: int,
    workers: int,
    on_progress: Any,
    flush_every_s: float = FLUSH_EVERY_S,
    ledger: Ledger | None = None,
    layout: Layout | None = None,
    on_substituted: Any = None,
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
                item = to_points(index, batch, normalise=entry.distance == "Cosine", layout=layout)
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
    written: list[Points] = []  # upserted, not yet flushed nor recorded
    last_flush = time.monotonic()

    def complete(item: Points) -> None:
        written.append(item)
        if time.monotonic() - last_flush >= flush_every_s:
            settle()

    def settle() -> None:
        """Flush every written batch, then record them: the ledger and the checkpoint never claim an unflushed one."""
        nonlocal watermark, last_flush
        if not written:
            return
        flush()  # durable before the ledger and the checkpoint say it is written
        last_flush = time.monotonic()
        records = 0
        for item in written:
            if ledger is not None:
                ledger.put(entry.source, zip(item.chroma_ids, item.fingerprints, strict=True))
            done_flags[item.index] = True
            records += len(item.ids)
            if on_substituted is not None and item.substituted:
                on_substituted(item.substituted)
        written.clear()
        while watermark < len(starts) and done_flags[watermark]:
            watermark += 1
        contiguous = starts[watermark] if watermark < len(starts) else len(ids)
        on_progress(contiguous, records)

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

    parallel = workers > 1 and target.capabilities.concurrent_writes
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upsert") if parallel else None
    in_flight: set[Future[Points]] = set()
    with target.bulk_writes(entry.target) as flush:
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
            settle()
        except BaseException:
            # what was written before the failure is kept (flushed, then recorded); the first failure is the one
            # reported, and batches left unrecorded are copied again on resume
            with contextlib.suppress(Exception):
                settle()
            raise
        finally:
            stop.set()
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            thread.join(timeout=30)
    if reader_error:
        raise reader_error[0]

"""Carrying a sync plan over: ChromaDB's changes into Qdrant (forward), Qdrant's into ChromaDB (reverse).

Each batch is written, then its fingerprints go to the ledger, so a killed sync leaves a ledger that claims
nothing unwritten; running the sync again re-plans and finds the written records already in step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from runbook_lib.chroma.source import RecordBatch
from runbook_lib.chroma.writer import ChromaWriter
from runbook_lib.config.faults import fault_point
from runbook_lib.core.chroma_floats import metadata_chroma_reads_back
from runbook_lib.core.fingerprint import Fingerprint, fingerprints, payload_digest
from runbook_lib.core.mapping import point_id
from runbook_lib.core.points import build_points
from runbook_lib.errors import SyncError
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.state.ledger import Ledger
from runbook_lib.steps.sync.diff import CollectionDiff, point_record
from runbook_lib.steps.sync.reader import SyncSource


def _batches(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[s : s + size] for s in range(0, len(items), size)]


def refresh_ledger(ledger: Ledger, diff: CollectionDiff) -> None:
    """Records already equal on both sides: bring the ledger up to them."""
    rows = [(cid, fp) for cid, fp in diff.in_step.items() if fp is not None]
    ledger.put(diff.collection, rows)
    ledger.delete(diff.collection, [cid for cid, fp in diff.in_step.items() if fp is None])
    stamp(ledger, diff, rows)


def stamp(ledger: Ledger, diff: CollectionDiff, rows: Sequence[tuple[str, Fingerprint]]) -> None:
    """The write sequence numbers of source records the ledger now describes (read again only once written)."""
    ledger.stamp(diff.collection, [(cid, fp.source, diff.sequences[cid]) for cid, fp in rows if cid in diff.sequences])


def to_qdrant(
    source: SyncSource,
    target: QdrantStore,
    ledger: Ledger,
    diff: CollectionDiff,
    *,
    upserts: list[str],
    deletes: list[str],
    batch_size: int,
    on_batch: Any = None,
) -> None:
    with target.bulk_writes(diff.target) as flush:
        for chunk in _batches(upserts, batch_size):
            batch = _from_plan(diff, chunk) or source.fetch(diff.collection, list(chunk), expected_dim=diff.dimension)
            point_ids, vectors, payloads = build_points(
                batch.ids,
                batch.embeddings,
                batch.documents,
                batch.metadatas,
                batch.uris,
                cosine=diff.cosine,
                layout=diff.layout,
            )
            fps = fingerprints(
                batch.embeddings,
                diff.layout.written_documents(batch.documents, batch.metadatas),
                batch.metadatas,
                batch.uris,
                cosine=diff.cosine,
                target_vectors=vectors,
            )
            rows = list(zip(batch.ids, fps, strict=True))
            ledger.put_pending(diff.collection, rows)  # before Qdrant has them: a killed sync knows its own writes
            target.upsert(diff.target, point_ids, vectors, payloads, batch_label="a sync batch")
            fault_point("sync:qdrant-written")  # in Qdrant, not yet in the ledger: the rerun finds them its own
            flush()  # durable before the ledger says it is written
            ledger.put(diff.collection, rows)
            stamp(ledger, diff, rows)
            ledger.clear_pending(diff.collection, list(batch.ids))
            if on_batch is not None:
                on_batch(len(chunk))
        for chunk in _batches(deletes, batch_size):
            ledger.put_pending(diff.collection, [(cid, None) for cid in chunk])
            target.delete_points(diff.target, [point_id(i) for i in chunk])
            flush()
            ledger.delete(diff.collection, list(chunk))
            ledger.clear_pending(diff.collection, list(chunk))
            if on_batch is not None:
                on_batch(len(chunk))


def _from_plan(diff: CollectionDiff, chunk: Sequence[str]) -> RecordBatch | None:
    """The records of ``chunk`` as the plan read them from this sync's snapshot (None: read them again)."""
    if diff.cached is None or not chunk or any(c not in diff.cached for c in chunk):
        return None
    rows = [diff.cached[c] for c in chunk]
    return RecordBatch(
        ids=list(chunk),
        embeddings=np.stack([r[0] for r in rows]),
        documents=[r[1] for r in rows],
        metadatas=[r[2] for r in rows],
        uris=[r[3] for r in rows],
    )


def to_chroma(
    target: QdrantStore,
    writer: ChromaWriter,
    diff: CollectionDiff,
    *,
    upserts: list[str],
    deletes: list[str],
    batch_size: int,
    on_batch: Any = None,
) -> tuple[list[tuple[str, Fingerprint]], list[str]]:
    """Write Qdrant's records into ChromaDB (through ``writer``) and read them back; returns the ledger rows to
    record once the writer has committed (a staged directory is not live until then)."""
    rows: list[tuple[str, Fingerprint]] = []
    for chunk in _batches(upserts, batch_size):
        points = target.retrieve(diff.target, [point_id(i) for i in chunk], with_vectors=True)
        records = [point_record(p, diff.layout) for p in points]
        if len(records) != len(chunk):
            missing = sorted(set(chunk) - {r[0] for r in records})[:5]
            raise SyncError(f"Qdrant no longer has points for {missing} of {diff.target!r}; run the sync again.")
        ids = [r[0] for r in records]
        vectors = np.asarray([r[1] for r in records], dtype=np.float32)
        documents = [r[2] for r in records]
        metadatas = [r[3] or None for r in records]
        uris = [r[4] for r in records]
        writer.upsert(diff.collection, ids, vectors, documents, metadatas, uris)
        back = writer.read(diff.collection, ids)
        stored = _check_read_back(diff.collection, ids, vectors, documents, metadatas, uris, back)
        # the source digest of what ChromaDB now holds (it may re-normalise a cosine vector by an ulp), the sketch
        # of what Qdrant holds: the next sync then finds this record unchanged on both sides
        fps = fingerprints(stored, documents, metadatas, uris, cosine=diff.cosine, target_vectors=vectors)
        rows.extend(zip(ids, fps, strict=True))
        if on_batch is not None:
            on_batch(len(chunk))
    for chunk in _batches(deletes, batch_size):
        writer.delete(diff.collection, list(chunk))
        if writer.read(diff.collection, list(chunk))["ids"]:
            raise SyncError(f"ChromaDB still holds deleted ids of {diff.collection!r}; nothing was replaced.")
        if on_batch is not None:
            on_batch(len(chunk))
    return rows, list(deletes)


def _check_read_back(
    name: str,
    ids: list[str],
    vectors: np.ndarray,
    documents: list[Any],
    metadatas: list[Any],
    uris: list[Any],
    back: Any,
) -> np.ndarray:
    """The vectors ChromaDB read back, in ``ids`` order, after checking they are what was written (vector,
    document, metadata with its types, uri)."""
    position = {cid: k for k, cid in enumerate(back["ids"])}
    if set(position) != set(ids):
        raise SyncError(f"ChromaDB did not keep every record written to {name!r}; nothing was replaced.")
    got = np.asarray([back["embeddings"][position[i]] for i in ids], dtype=np.float32)
    back_uris = back.get("uris") or [None] * len(back["ids"])
    wrong = [
        cid
        for cid, d, m, u in zip(ids, documents, metadatas, uris, strict=True)
        if payload_digest(d, metadata_chroma_reads_back(m), u)  # the floats as Chroma stores what the writer gave it
        != payload_digest(back["documents"][position[cid]], back["metadatas"][position[cid]], back_uris[position[cid]])
    ]
    # within 1e-6 (the SPEC's vector tolerance): chromadb may hand a cosine collection's vector back re-normalised,
    # one float32 ulp away from what was written
    if got.shape != vectors.shape or not np.allclose(got, vectors, rtol=0, atol=1e-6) or wrong:
        first = f" (first: {wrong[0]!r}: document, metadata or uri)" if wrong else ""
        raise SyncError(f"ChromaDB read back other values than were written to {name!r}{first}; nothing was replaced.")
    return got

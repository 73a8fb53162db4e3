"""The sync plan: what changed on each side of one collection since the run last synchronised.

Every id of the live source, of the Qdrant collection and of the run's ledger is looked at once, in batches
(memory follows the batch size, plus the id lists): every point is read and fingerprinted
(:mod:`runbook_lib.core.fingerprint`) in one pass; of the source, only the records ChromaDB's write sequence says
were written since the last sync (every record for a server, or when that sequence cannot be trusted). Each is
compared with the ledger. A record changed on one side only is a change to carry over; changed on both sides to
the same content is already in step (only the ledger is refreshed: this is also how a killed sync resumes);
changed on both sides differently is a conflict.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runbook_lib.chroma.catalog import Catalog, CatalogUnavailable
from runbook_lib.core.fingerprint import (
    CLOSE,
    DIFFERENT,
    Fingerprint,
    compare_sketches,
    fingerprints,
    sketches_agree,
    target_fingerprints,
)
from runbook_lib.core.layouts import Layout
from runbook_lib.core.mapping import normalise_rows, point_id
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.state.ledger import Ledger, Marker

#: Conflicts listed by id in the plan (the count is always complete).
MAX_LISTED = 20
#: A point's vector differs from the ledger's when a component is further away than this (verify's tolerance).
VECTOR_TOLERANCE = 1e-6
#: Changed source records kept from the plan for the forward write (8,192 x 1536-d float32 = 48 MiB at most).
MAX_CACHED = 8192
KINDS = ("added", "changed", "deleted")


@dataclass
class SideChanges:
    """Changes made on one side (ChromaDB or Qdrant) since the last sync, by kind."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)

    def upserts(self) -> list[str]:
        return self.added + self.changed

    def total(self) -> int:
        return len(self.added) + len(self.changed) + len(self.deleted)

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in KINDS}

    def add(self, kind: str, cid: str) -> None:
        getattr(self, kind).append(cid)


@dataclass
class CollectionDiff:
    collection: str
    target: str
    cosine: bool
    dimension: int | None
    source: SideChanges = field(default_factory=SideChanges)  # changed in ChromaDB
    qdrant: SideChanges = field(default_factory=SideChanges)  # changed in Qdrant
    conflicts: list[str] = field(default_factory=list)
    #: conflicts whose record no longer exists in ChromaDB / in Qdrant (a side that wins by deleting)
    conflict_gone_in_source: set[str] = field(default_factory=set)
    conflict_gone_in_qdrant: set[str] = field(default_factory=set)
    #: already equal on both sides but the ledger is out of date (a sync killed after writing, dual writes)
    in_step: dict[str, Fingerprint | None] = field(default_factory=dict)
    unchanged: int = 0
    points_without_id: int = 0
    layout: Layout = field(default_factory=Layout)  # the run's payload layout (how points are read and written)
    source_compared: str = "every record"  # or "records written since the last sync" (ChromaDB's write sequence)
    source_read: int = 0
    #: write sequence numbers of the source records read that differ from the ledger (stamped once written)
    sequences: dict[str, int] = field(default_factory=dict)
    #: points whose vector differs from the ledger's by more than :data:`VECTOR_TOLERANCE`, found by comparing
    #: the full vectors where the sketches were too close to tell
    vector_edited: set[str] = field(default_factory=set)
    #: the changed source records as read (vector, document, metadata, uri), so a forward sync writes them without
    #: reading them again; None once more than :data:`MAX_CACHED` changed (then they are read again, a batch at a time)
    cached: dict[str, tuple[Any, Any, Any, Any]] | None = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "target": self.target,
            "source_changes": self.source.counts(),
            "qdrant_changes": self.qdrant.counts(),
            "conflicts": len(self.conflicts),
            "conflict_ids": self.conflicts[:MAX_LISTED],
            "in_step": len(self.in_step),
            "unchanged": self.unchanged,
            "points_without_chroma_id": self.points_without_id,
            "source_compared": self.source_compared,
            "source_records_read": self.source_read,
        }


def _batches(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def point_record(point: Any, layout: Layout | None = None) -> tuple[str, list[float], str | None, Any, str | None]:
    """(chroma id, vector, document, metadata, uri) of a point written in ``layout`` (default: the SPEC layout)."""
    vector = point.vector
    if isinstance(vector, dict):  # a named vector: the unnamed one is ""
        vector = vector.get("", next(iter(vector.values()), None))
    cid, document, metadata, uri = (layout or Layout()).from_payload(point.payload or {})
    return cid, vector, document, metadata, uri


@dataclass
class SourceScan:
    """Which source records this sync must read: all of them, or (when ChromaDB's write sequence can be trusted)
    only those written since the ledger last saw them."""

    ids: set[str]
    to_read: list[str]
    sequences: dict[str, int] | None = None  # id -> write sequence number, when known
    marker: Marker | None = None  # where the collection's write sequence stands now
    how: str = "every record"


def _same_timeline(catalog: Catalog, name: str, seen: Marker, now: tuple[str, int], live_file: str | None) -> bool:
    """Whether the snapshot continues the timeline the ledger's marker describes: the same metadata segment and
    SQLite file, a last number that never went back, and the record numbered as the marker says unchanged."""
    if seen.segment != now[0] or now[1] < seen.seq:
        return False
    if seen.file_id is not None and live_file is not None and seen.file_id != live_file:
        return False
    row = catalog.row_digest(name, seen.seq)
    return row is None or row == seen.row


def scan_source(
    source: Any,
    catalog: Catalog | None,
    ledger: Ledger,
    known: dict[str, int | None],
    name: str,
    *,
    full: bool,
    live_file: str | None = None,
) -> SourceScan:
    """The source's ids, and which of them to read. With a catalog (a persistent directory's snapshot) the
    ledger's write sequence numbers skip every record nobody wrote since the last sync. They are trusted only
    while the collection's timeline is the one the ledger saw (:func:`_same_timeline`; ``live_file``: the live
    SQLite file's identity when the snapshot was taken) and no record was renumbered below the ledger's marker (a
    directory swapped for an older copy and written again); otherwise, or with ``full``, every record is read.
    ``known``: the ledger's ids with their numbers."""
    if catalog is None:
        present = name in source.collection_names()
        ids = set(source.snapshot_ids(name)) if present else set()
        return SourceScan(ids, sorted(ids))
    if name not in catalog.collection_names():
        return SourceScan(set(), [])
    try:
        now = catalog.sequences(name)
        segment, last = catalog.sequence_marker(name)
        marker = Marker(segment, last, live_file, catalog.row_digest(name, last))
        seen = ledger.marker(name)
        trusted = not full and seen is not None and _same_timeline(catalog, name, seen, (segment, last), live_file)
    except CatalogUnavailable:  # a layout this reader does not know: ids from chromadb, every record read
        ids = set(source.snapshot_ids(name))
        return SourceScan(ids, sorted(ids))
    ids = set(now)
    if not trusted or seen is None:
        return SourceScan(ids, sorted(ids), now, marker)
    to_read = []
    for cid, seq in now.items():
        was = known.get(cid)
        if was == seq:
            continue
        if was is not None and seq <= seen.seq:  # renumbered into the past: not the timeline the ledger saw
            return SourceScan(ids, sorted(ids), now, marker)
        to_read.append(cid)
    return SourceScan(ids, sorted(to_read), now, marker, how="records written since the last sync")


def _target_scan(
    target: QdrantStore,
    ledger: Ledger,
    diff: CollectionDiff,
    page: int,
    on_batch: Any,
    unchanged_in_source: Any = None,
) -> tuple[set[str], dict[str, Fingerprint | None]]:
    """One pass over every point (payload and vector): the chroma ids present, and the points that differ from
    the ledger (their fingerprint; points with no vector count as absent). A vector whose sketch is too close to
    the ledger's to tell an ulp of re-normalisation from a small edit is compared in full with the source's, when
    the source record is the one the ledger saw (``unchanged_in_source``: ids -> their vectors in Qdrant's form)."""
    present: set[str] = set()
    changed: dict[str, Fingerprint | None] = {}
    if not target.exists(diff.target):
        return present, changed
    offset: Any = None
    while True:
        points, offset = target.scroll(diff.target, limit=page, offset=offset, with_vectors=True)
        rows = []
        for point in points:
            cid, vector, document, metadata, uri = point_record(point, diff.layout)
            if cid is None:
                diff.points_without_id += 1
                continue
            present.add(str(cid))
            if vector is None:
                changed[str(cid)] = None
            else:
                rows.append((str(cid), vector, document, metadata, uri))
        if rows:
            vectors = np.asarray([r[1] for r in rows], dtype=np.float32)
            fps = target_fingerprints(vectors, [r[2] for r in rows], [r[3] for r in rows], [r[4] for r in rows])
            led = ledger.get(diff.collection, [r[0] for r in rows])
            close: dict[str, int] = {}
            for k, ((cid, *_), fp) in enumerate(zip(rows, fps, strict=True)):
                was = led.get(cid)
                if was is None or fp.payload != was.payload:
                    changed[cid] = fp
                    continue
                state = compare_sketches(fp.sketch, was.sketch)
                if state == CLOSE:
                    close[cid] = k
                elif state == DIFFERENT:
                    changed[cid] = fp
            if close and unchanged_in_source is not None:
                source_vectors = unchanged_in_source(list(close), {c: led[c] for c in close})
                same: list[tuple[str, bytes]] = []
                for cid, k in close.items():
                    theirs = source_vectors.get(cid)
                    if theirs is None:
                        continue
                    if float(np.abs(vectors[k] - theirs).max()) > VECTOR_TOLERANCE:
                        changed[cid] = fps[k]
                        diff.vector_edited.add(cid)
                    else:
                        same.append((cid, fps[k].sketch))
                ledger.refresh_sketches(diff.collection, same)  # the same vector: next time its digest says so
        if on_batch is not None:
            on_batch(len(points))
        if offset is None:
            return present, changed


def settle_pending(target: QdrantStore, ledger: Ledger, diff: CollectionDiff) -> int:
    """The writes a killed forward sync recorded as under way (:meth:`Ledger.put_pending`): those Qdrant holds as
    recorded were that sync's, and the ledger takes them as written (so they are not changes made in Qdrant);
    the others never landed. Returns how many were the sync's."""
    pending = ledger.pending(diff.collection)
    if not pending:
        return 0
    ids = sorted(pending)
    landed: list[tuple[str, Fingerprint]] = []
    gone: list[str] = []
    present: dict[str, Fingerprint] = {}
    if target.exists(diff.target):
        for chunk in _batches(ids, 256):
            rows = [
                point_record(p, diff.layout)
                for p in target.retrieve(diff.target, [point_id(c) for c in chunk], with_vectors=True)
            ]
            rows = [r for r in rows if r[0] is not None and r[1] is not None]
            if not rows:
                continue
            fps = target_fingerprints(
                np.asarray([r[1] for r in rows], dtype=np.float32),
                [r[2] for r in rows],
                [r[3] for r in rows],
                [r[4] for r in rows],
            )
            present.update({str(r[0]): fp for r, fp in zip(rows, fps, strict=True)})
    for cid in ids:
        fp, now = pending[cid], present.get(cid)
        if fp is None and now is None:
            gone.append(cid)
        elif fp is not None and now is not None and same_target_state(now, fp):
            landed.append((cid, fp))
    ledger.put(diff.collection, landed)
    ledger.delete(diff.collection, gone)
    ledger.clear_pending(diff.collection)
    return len(landed) + len(gone)


def diff_collection(
    source: Any,
    target: QdrantStore,
    ledger: Ledger,
    name: str,
    target_name: str,
    *,
    cosine: bool,
    dimension: int | None,
    batch_size: int,
    on_batch: Any = None,
    layout: Layout | None = None,
    catalog: Catalog | None = None,
    full: bool = False,
    live_file: str | None = None,
) -> CollectionDiff:
    """Compare the live source, the target and the ledger for one collection (nothing is written but the
    ledger's write sequence numbers of the records read).

    Every point of the target is read (Qdrant keeps no write sequence a client can see); of the source, every
    record, or with a ``catalog`` only those written since the last sync (:func:`scan_source`). A record not
    read stands for what the ledger holds."""
    diff = CollectionDiff(name, target_name, cosine, dimension, layout=layout or Layout())
    settle_pending(target, ledger, diff)
    known = ledger.sequences(name)  # the ledger's ids (and write sequence numbers), read once
    ledger_ids = set(known)
    scan = scan_source(source, catalog, ledger, known, name, full=full, live_file=live_file)
    diff.source_compared = scan.how
    diff.source_read = len(scan.to_read)
    # local mode (not the engine) walks every id of the collection per page: few large pages (4,096 points: ~200 MB
    # of vectors as Python lists while a page is held); the engine's pages stay near the batch size
    page = max(batch_size, 1024 if target.capabilities.engine else 4096)

    def unchanged_in_source(ids: list[str], led: dict[str, Fingerprint]) -> dict[str, np.ndarray]:
        """The vectors (in Qdrant's form) of those of ``ids`` that ChromaDB holds as the ledger saw them."""
        ids = [c for c in ids if c in scan.ids]
        out: dict[str, np.ndarray] = {}
        for chunk in _batches(ids, batch_size):
            batch = source.fetch(name, list(chunk), expected_dim=dimension)
            docs = diff.layout.written_documents(batch.documents, batch.metadatas)
            fps = fingerprints(batch.embeddings, docs, batch.metadatas, batch.uris, cosine=cosine)
            vectors = np.asarray(batch.embeddings, dtype=np.float32)
            vectors = normalise_rows(vectors) if cosine else vectors
            for k, (cid, fp) in enumerate(zip(chunk, fps, strict=True)):
                if fp.source == led[cid].source:
                    out[cid] = vectors[k]
        return out

    in_qdrant, tgt_changed = _target_scan(target, ledger, diff, page, on_batch, unchanged_in_source)

    def target_state(cid: str, led: Fingerprint | None) -> Fingerprint | None:
        return tgt_changed.get(cid, led if cid in in_qdrant else None)

    for chunk in _batches(scan.to_read, batch_size):
        batch = source.fetch(name, list(chunk), expected_dim=dimension)
        docs = diff.layout.written_documents(batch.documents, batch.metadatas)
        fps = fingerprints(batch.embeddings, docs, batch.metadatas, batch.uris, cosine=cosine)
        src_fp = dict(zip(chunk, fps, strict=True))
        led = ledger.get(name, list(chunk))
        for k, cid in enumerate(chunk):
            was = led.get(cid)
            _classify(diff, cid, src_fp[cid], target_state(cid, was), was)
            if diff.cached is not None and (was is None or was.source != src_fp[cid].source):
                row = (batch.embeddings[k].copy(), batch.documents[k], batch.metadatas[k], batch.uris[k])
                diff.cached[cid] = row
                if len(diff.cached) > MAX_CACHED:
                    diff.cached = None
        if scan.sequences is not None:
            ledger.stamp(name, [(cid, src_fp[cid].source, scan.sequences[cid]) for cid in chunk])
            for cid in chunk:  # changed: the ledger takes the number once it records the new state
                was = led.get(cid)
                if was is None or was.source != src_fp[cid].source:
                    diff.sequences[cid] = scan.sequences[cid]
        if on_batch is not None:
            on_batch(len(chunk))
    # what was not read: records gone from the source, and points changed, added or gone in Qdrant
    read = set(scan.to_read)
    gone = {c for c in ledger_ids if c not in scan.ids or c not in in_qdrant}
    rest = sorted((gone | set(tgt_changed)) - read)
    for chunk in _batches(rest, batch_size):
        led = ledger.get(name, list(chunk))
        for cid in chunk:
            was = led.get(cid)
            _classify(diff, cid, was if cid in scan.ids else None, target_state(cid, was), was)
    diff.unchanged += len(ledger_ids) - len(read & ledger_ids) - len(set(rest) & ledger_ids)
    if scan.marker is not None:
        ledger.set_marker(name, scan.marker)
    return diff


def same_target_state(a: Fingerprint, b: Fingerprint) -> bool:
    return a.payload == b.payload and sketches_agree(a.sketch, b.sketch)


def _classify(
    diff: CollectionDiff, cid: str, src: Fingerprint | None, tgt: Fingerprint | None, led: Fingerprint | None
) -> None:
    src_changed = (src is None) != (led is None) or (src is not None and led is not None and src.source != led.source)
    edited = cid in diff.vector_edited  # a small vector edit in Qdrant: the sketches alone would call it the same
    tgt_changed = (
        edited
        or (tgt is None) != (led is None)
        or (tgt is not None and led is not None and not same_target_state(tgt, led))
    )
    same_now = (src is None and tgt is None) or (
        not edited and src is not None and tgt is not None and same_target_state(src, tgt)
    )
    if not src_changed and not tgt_changed:
        diff.unchanged += 1
        return
    if same_now:  # both sides agree already: only the ledger is behind
        diff.in_step[cid] = src
        return
    if src_changed and tgt_changed:
        diff.conflicts.append(cid)
        if src is None:
            diff.conflict_gone_in_source.add(cid)
        if tgt is None:
            diff.conflict_gone_in_qdrant.add(cid)
        return
    side, now = (diff.source, src) if src_changed else (diff.qdrant, tgt)
    kind = "deleted" if now is None else ("added" if led is None else "changed")
    side.add(kind, cid)


def resolve_by_journal(diffs: list[CollectionDiff], pending: Sequence[Any], ledger: Ledger) -> int:
    """Settle the conflicts the app's dual-write journal explains: a record one store missed a write of (every
    pending entry for it names the same store as having missed) is, on the other store (the primary), the app's
    latest state, even where later writes reached both: it becomes that store's change, not a conflict. Returns
    how many were settled."""
    missed_by: dict[tuple[str, str], set[str]] = {}
    for entry in pending:
        for cid in entry.ids:
            missed_by.setdefault((entry.collection, cid), set()).add(entry.missed)
    settled = 0
    for diff in diffs:
        explained = {
            cid: next(iter(missed_by[(diff.collection, cid)]))
            for cid in diff.conflicts
            if len(missed_by.get((diff.collection, cid), ())) == 1
        }
        if not explained:
            continue
        known = ledger.get(diff.collection, list(explained))
        for cid, missed in explained.items():
            winner_gone = cid in (diff.conflict_gone_in_qdrant if missed == "chroma" else diff.conflict_gone_in_source)
            side = diff.qdrant if missed == "chroma" else diff.source
            side.add("deleted" if winner_gone else ("changed" if cid in known else "added"), cid)
            diff.conflict_gone_in_source.discard(cid)
            diff.conflict_gone_in_qdrant.discard(cid)
        diff.conflicts = [c for c in diff.conflicts if c not in explained]
        settled += len(explained)
    return settled

"""The sync plan: what changed on each side of one collection since the run last synchronised.

Every id of the live source, of the Qdrant collection and of the run's ledger is looked at once, in batches
(memory follows the batch size, plus the id lists): the source record and the point are fingerprinted
(:mod:`runbook_lib.core.fingerprint`) and compared with the ledger. A record changed on one side only is a
change to carry over; changed on both sides to the same content is already in step (only the ledger is
refreshed: this is also how a killed sync resumes); changed on both sides differently is a conflict.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from runbook_lib.core.fingerprint import Fingerprint, fingerprints, sketches_agree, target_fingerprint
from runbook_lib.core.layouts import Layout
from runbook_lib.source.chroma import ChromaSource
from runbook_lib.state.ledger import Ledger
from runbook_lib.target.qdrant import QdrantTarget

#: Conflicts listed by id in the plan (the count is always complete).
MAX_LISTED = 20
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


def diff_collection(
    source: ChromaSource,
    target: QdrantTarget,
    ledger: Ledger,
    name: str,
    target_name: str,
    *,
    cosine: bool,
    dimension: int | None,
    batch_size: int,
    on_batch: Any = None,
    layout: Layout | None = None,
) -> CollectionDiff:
    """Compare the live source, the target and the ledger for one collection (nothing is written)."""
    diff = CollectionDiff(name, target_name, cosine, dimension, layout=layout or Layout())
    source_ids = set(source.snapshot_ids(name)) if name in source.collection_names() else set()
    point_of: dict[str, str] = {}
    if target.exists(target_name):
        for pid, cid in target.iter_chroma_ids(target_name, page=max(batch_size, 256)):
            if cid is None:
                diff.points_without_id += 1
            else:
                point_of[str(cid)] = pid
    ledger_ids = set(ledger.ids(name))
    every = sorted(source_ids | set(point_of) | ledger_ids)
    for chunk in _batches(every, batch_size):
        in_source = [i for i in chunk if i in source_ids]
        src_fp: dict[str, Fingerprint] = {}
        if in_source:
            batch = source.fetch(name, in_source, expected_dim=dimension)
            docs = diff.layout.written_documents(batch.documents, batch.metadatas)
            fps = fingerprints(batch.embeddings, docs, batch.metadatas, batch.uris, cosine=cosine)
            src_fp = dict(zip(in_source, fps, strict=True))
        tgt_fp: dict[str, Fingerprint] = {}
        in_target = [i for i in chunk if i in point_of]
        if in_target:
            for point in target.retrieve(target_name, [point_of[i] for i in in_target], with_vectors=True):
                cid, vector, document, metadata, uri = point_record(point, diff.layout)
                if cid is not None and vector is not None:
                    tgt_fp[str(cid)] = target_fingerprint(vector, document, metadata, uri)
        led = ledger.get(name, list(chunk))
        for cid in chunk:
            _classify(diff, cid, src_fp.get(cid), tgt_fp.get(cid), led.get(cid))
        if on_batch is not None:
            on_batch(len(chunk))
    return diff


def _same_target_state(a: Fingerprint, b: Fingerprint) -> bool:
    return a.payload == b.payload and sketches_agree(a.sketch, b.sketch)


def _classify(
    diff: CollectionDiff, cid: str, src: Fingerprint | None, tgt: Fingerprint | None, led: Fingerprint | None
) -> None:
    src_changed = (src is None) != (led is None) or (src is not None and led is not None and src.source != led.source)
    tgt_changed = (tgt is None) != (led is None) or (
        tgt is not None and led is not None and not _same_target_state(tgt, led)
    )
    same_now = (src is None and tgt is None) or (src is not None and tgt is not None and _same_target_state(src, tgt))
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

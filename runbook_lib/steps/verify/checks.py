"""Verifying one collection: the per-collection checks, compared in one streaming pass over the source.

``config``
    the target collection exists, has the source's dimension and the mapped distance, and (alias cutover)
    the alias named like the source collection points at it.
``count``
    Qdrant's exact count equals the number of source ids.
``identity``
    the set of Chroma ids equals the set of payload ``chroma_id`` values (:mod:`runbook_lib.steps.verify.identity`).
``vectors``
    every vector (or a deterministic sample, ``vector_check=N``) equal within ``tolerance`` (max absolute
    component difference), the source normalised first for Cosine since Qdrant normalises on write.
``payload``
    exactly the SPEC keys; document, metadata (type-strict and recursive: ``1``, ``1.0`` and ``True``
    differ, lists element by element) and uri (payload ``uri`` absent <=> source uri ``None``) equal.
``search``
    exact top-k parity on sampled queries (:mod:`runbook_lib.steps.verify.queries`).

Streaming: the source is read in ``batch_size`` batches (a reader thread fetches the next batch while the
current one is compared); each batch's points are retrieved from Qdrant by their expected point ids, and
the exact top-k of every query is kept as a running top-k across batches. Memory holds the id lists (as
the migration does), one or two batches of vectors, and ``sample_queries * k`` neighbours -- never all
vectors.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runbook_lib.chroma.base import ChromaReader, RecordBatch
from runbook_lib.config.params import VerifyParams
from runbook_lib.core.compare import ABSENT, RunningTopK, layout_payload_differences, strict_equal
from runbook_lib.core.layouts import Layout
from runbook_lib.core.mapping import PAYLOAD_ID_KEY, normalise_rows, point_id, qdrant_distance
from runbook_lib.errors import RunbookError
from runbook_lib.kernel.display import progress
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.steps.migrate.shape import index_problems
from runbook_lib.steps.verify.identity import check_identity
from runbook_lib.steps.verify.queries import QUERY_SEED, check_search, pick_queries
from runbook_lib.steps.verify.result import FAIL, HIST_EDGES, NOT_RUN, SKIPPED, CollectionReport, Differences

log = logging.getLogger(__name__)


# --- reading the source ahead ------------------------------------------------------------------------------
def _prefetch(batches: Iterator[RecordBatch], depth: int = 2) -> Iterator[RecordBatch]:
    """Read the next source batches in a thread while the caller compares the current one."""
    q: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            for batch in batches:
                if not put(("batch", batch)):
                    return
            put(("end", None))
        except BaseException as exc:
            put(("error", exc))

    thread = threading.Thread(target=reader, name="verify-read", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=30)


# --- what to verify ---------------------------------------------------------------------------------------
@dataclass
class Planned:
    """One collection to verify: its source name, where it was migrated to, and the migrate step's status."""

    source: str
    target: str
    alias: str | None
    migrate_status: str | None
    #: the payload indexes the migration planned and created (``PayloadIndex.to_dict``), checked where reported
    payload_indexes: list[dict[str, Any]] = field(default_factory=list)


# --- verifying one collection ----------------------------------------------------------------------------------
class Histogram:
    """Counts of the max absolute difference per vector, binned by :data:`HIST_EDGES`."""

    def __init__(self) -> None:
        self.counts = np.zeros(len(HIST_EDGES) + 1, dtype=np.int64)

    def add(self, values: np.ndarray) -> None:
        if len(values):
            self.counts += np.bincount(np.searchsorted(HIST_EDGES, values, side="right"), minlength=len(self.counts))

    def to_dict(self, tolerance: float) -> dict[str, Any]:
        return {
            "edges": [float(e) for e in HIST_EDGES],
            "counts": [int(c) for c in self.counts],
            "bins": "counts[0]: below 1e-12 (exact zeros included); counts[i]: [edges[i-1], edges[i]); "
            "counts[-1]: 10 and above (NaN included)",
            "tolerance": tolerance,
        }


def verify_collection(
    source: ChromaReader,
    target: QdrantStore,
    plan: Planned,
    p: VerifyParams,
    hist: Histogram,
    overall: Any,
    layout: Layout | None = None,
) -> CollectionReport:
    """Run every check on one collection; a :class:`RunbookError` stops it and is reported, not raised."""
    t0 = time.perf_counter()
    rep = CollectionReport(collection=plan.source, target=plan.target, alias=plan.alias)
    rep.migrate_status = plan.migrate_status
    rep.differences = Differences(plan.source)
    try:
        _run_checks(source, target, rep, p, hist, overall, layout, plan.payload_indexes)
    except RunbookError as exc:
        rep.error = str(exc)
        log.warning("%s: verification stopped: %s", plan.source, exc)
    rep.seconds = time.perf_counter() - t0
    why = rep.error or next((c.summary for c in rep.checks.values() if c.result == FAIL), "")
    for chk in rep.checks.values():
        if chk.result == NOT_RUN and not chk.summary:
            chk.summary = f"not run: {why}"
    if rep.status == "pending":
        rep.status = "verified" if rep.ok else "FAILED"
    # a verified collection is in the step's table right after its verdict; only a failure is worth a line above it
    level = logging.DEBUG if rep.status == "verified" else logging.INFO
    log.log(
        level, "%s -> %s: %s (%d records, %.1f s)", rep.collection, rep.target, rep.status, rep.records, rep.seconds
    )
    return rep


def _run_checks(
    source: ChromaReader,
    target: QdrantStore,
    rep: CollectionReport,
    p: VerifyParams,
    hist: Histogram,
    overall: Any,
    layout: Layout | None = None,
    planned_indexes: Sequence[Mapping[str, Any]] = (),
) -> None:
    assert rep.differences is not None
    diffs = rep.differences
    checks = rep.checks
    name, tname = rep.collection, rep.target
    ids = source.snapshot_ids(name)
    n = len(ids)
    rep.records = n
    rep.space = source.space(name)
    rep.distance = qdrant_distance(rep.space)
    rep.dimension = source.dimension(name) if n else None
    exists = target.exists(tname)

    # --- empty source collections ---------------------------------------------------------------------
    if n == 0 and not exists:
        rep.status = "skipped (empty)"
        for chk in checks.values():
            chk.result = SKIPPED
            chk.summary = "source collection is empty; Qdrant has no such collection (nothing to migrate)"
        checks["count"].set(True, "source 0, Qdrant has no collection", source=0, target=None)
        return

    # --- config ------------------------------------------------------------------------------------------
    if not exists:
        checks["config"].set(False, f"Qdrant has no collection {tname!r}", exists=False)
        diffs.add("config", "(collection)", "collection", tname, ABSENT, "the target collection does not exist")
        return
    found = target.describe_collection(tname)
    problems = []
    if rep.dimension is not None and found.size != rep.dimension:
        problems.append(f"dimension {found.size}, expected {rep.dimension}")
        diffs.add("config", "(collection)", "dimension", rep.dimension, found.size)
    if found.distance != rep.distance:
        problems.append(f"distance {found.distance}, expected {rep.distance} (Chroma {rep.space})")
        diffs.add("config", "(collection)", "distance", rep.distance, found.distance, f"Chroma space {rep.space}")
    alias_target = None
    if rep.alias:
        alias_target = target.aliases().get(rep.alias)
        if alias_target != tname:
            problems.append(f"alias {rep.alias!r} points at {alias_target!r}, expected {tname!r}")
            diffs.add("config", "(collection)", "alias", tname, alias_target, f"alias {rep.alias!r}")
    index_problems_found = index_problems(target, tname, planned_indexes) if planned_indexes else []
    for problem in index_problems_found or []:
        problems.append(problem)
        diffs.add("config", "(collection)", "payload index", "planned", "missing or other type", problem)
    indexes_said = (
        ""
        if not planned_indexes
        else f", {len(planned_indexes)} payload indexes"
        + (" (not reported by this target: not checked)" if index_problems_found is None else "")
    )
    checks["config"].set(
        not problems,
        "; ".join(problems)
        or f"{found.distance}, dimension {found.size}" + (f", alias {rep.alias!r}" if rep.alias else "") + indexes_said,
        collection=tname,
        dimension={"source": rep.dimension, "target": found.size},
        distance={"expected": rep.distance, "target": found.distance, "chroma_space": rep.space},
        alias={"name": rep.alias, "points_to": alias_target} if rep.alias else None,
        payload_indexes={
            "planned": len(planned_indexes),
            "checked": index_problems_found is not None,
            "problems": index_problems_found or [],
        },
    )

    # --- count -------------------------------------------------------------------------------------------
    tcount = target.count(tname)
    checks["count"].set(tcount == n, f"source {n:,}, Qdrant {tcount:,}", source=n, target=tcount)
    if tcount != n:
        diffs.add("count", "(collection)", "count", n, tcount, f"{tcount - n:+,} points")

    # --- one streaming pass: identity (expected points), vectors, payload, exact top-k -----------------
    dim = rep.dimension
    normalise = rep.space == "cosine"
    sample_n = p.vector_sample
    sample: set[str] | None = None
    if sample_n is not None and sample_n < n:
        rng = np.random.default_rng([QUERY_SEED + 1, zlib.crc32(name.encode())])
        sample = {ids[int(i)] for i in rng.choice(n, size=sample_n, replace=False)}
    k = min(p.k, n)
    queries = pick_queries(source, name, ids, p.sample_queries, dim) if n and dim else []
    topk = RunningTopK(np.stack([q.vector for q in queries]) if queries else np.zeros((0, dim or 1)), k, rep.space)

    expected_pids: set[str] = set()
    pid_collisions: list[tuple[str, str]] = []
    missing_expected = 0
    foreign_ids = 0  # expected point carries another record's chroma_id
    payload_records = 0
    vec_compared = vec_differ = 0
    max_diff = 0.0
    sum_diff = 0.0
    bar = progress(total=n, desc=name, unit="rec", leave=False)
    for batch in _prefetch(source.iter_batches(name, p.batch_size, ids=ids, expected_dim=dim)):
        pids = [point_id(i) for i in batch.ids]
        for cid, pid in zip(batch.ids, pids, strict=True):
            if pid in expected_pids:
                pid_collisions.append((cid, pid))
            expected_pids.add(pid)
        want = [cid in sample for cid in batch.ids] if sample is not None else [True] * len(batch)
        records = {str(r.id): r for r in target.retrieve(tname, pids, with_vectors=sample is None)}
        if sample is not None and any(want):
            with_vec = target.retrieve(tname, [pid for pid, w in zip(pids, want, strict=True) if w], with_vectors=True)
            for r in with_vec:
                if str(r.id) in records:
                    records[str(r.id)] = r
        rows_src: list[int] = []
        rows_tgt: list[Any] = []
        for j, (cid, pid) in enumerate(zip(batch.ids, pids, strict=True)):
            rec = records.get(pid)
            if rec is None:
                missing_expected += 1
                continue
            payload = rec.payload or {}
            if not strict_equal(payload.get(PAYLOAD_ID_KEY, ABSENT), cid):
                foreign_ids += 1
            found_diffs = layout_payload_differences(
                layout, cid, batch.documents[j], batch.metadatas[j], batch.uris[j], payload
            )
            if any(fld != "chroma_id" for fld, *_ in found_diffs):
                payload_records += 1
            for fld, s, t, detail in found_diffs:  # a foreign chroma_id is an identity difference
                diffs.add("identity" if fld == "chroma_id" else "payload", cid, fld, s, t, detail)
            if want[j]:
                vec = rec.vector
                if not isinstance(vec, list) or len(vec) != dim:
                    shape = f"dimension {len(vec)}" if isinstance(vec, list) else f"{type(vec).__name__}"
                    vec_compared += 1
                    vec_differ += 1
                    diffs.add(
                        "vectors", cid, "vector", f"dimension {dim}", shape, "the point's vector has another shape"
                    )
                    continue
                rows_src.append(j)
                rows_tgt.append(vec)
        if rows_src:
            expected = batch.embeddings[rows_src]
            if normalise:
                expected = normalise_rows(expected)
            got = np.asarray(rows_tgt, dtype=np.float64)
            delta = np.abs(got - expected.astype(np.float64))
            per_vec = delta.max(axis=1) if dim else np.zeros(len(rows_src))
            per_vec = np.where(np.isfinite(per_vec), per_vec, np.inf)
            hist.add(per_vec)
            vec_compared += len(rows_src)
            finite = per_vec[np.isfinite(per_vec)]
            if len(finite):
                max_diff = max(max_diff, float(finite.max()))
                sum_diff += float(finite.sum())
            if not np.isfinite(per_vec).all():
                max_diff = math.inf
            for row in np.flatnonzero(per_vec > p.tolerance):
                vec_differ += 1
                j = rows_src[int(row)]
                comp = int(np.nanargmax(np.where(np.isfinite(delta[row]), delta[row], np.inf)))
                diffs.add(
                    "vectors",
                    batch.ids[j],
                    f"vector[{comp}]",
                    float(expected[row, comp]),
                    float(got[row, comp]),
                    f"max |difference| {per_vec[row]:.3g} > tolerance {p.tolerance:g}"
                    + (" (source normalised: Cosine)" if normalise else ""),
                )
        topk.update(batch.embeddings, batch.ids)
        bar.update(len(batch))
        overall.update(len(batch))
    bar.close()

    # --- identity ------------------------------------------------------------------------------------------
    check_identity(target, rep, ids, tcount, missing_expected, foreign_ids, pid_collisions, p.batch_size)

    # --- content -------------------------------------------------------------------------------------------
    compared_payloads = n - missing_expected
    by_field = diffs.by_field.get("payload", {})
    checks["payload"].set(
        payload_records == 0,
        f"{payload_records:,} of {compared_payloads:,} records differ"
        + (f" ({', '.join(f'{fld}: {count}' for fld, count in sorted(by_field.items()))})" if by_field else ""),
        records_compared=compared_payloads,
        records_differing=payload_records,
        differences_by_field=by_field,
        not_compared_missing=missing_expected,
    )
    mean = sum_diff / vec_compared if vec_compared else None
    checks["vectors"].set(
        vec_differ == 0,
        f"{vec_differ:,} of {vec_compared:,} vectors differ (max |diff| {max_diff:.3g}, tolerance {p.tolerance:g})",
        compared=vec_compared,
        differing=vec_differ,
        max_abs_diff=max_diff if math.isfinite(max_diff) else "inf",
        mean_max_abs_diff=mean,
        tolerance=p.tolerance,
        normalised_source=normalise,
        mode="all" if sample is None else f"sample of {len(sample)}",
    )

    # --- search parity ------------------------------------------------------------------------------------
    if queries:
        check_search(source, target, rep, queries, topk, k)
    else:
        checks["search"].result = SKIPPED
        checks["search"].summary = "no records to search"

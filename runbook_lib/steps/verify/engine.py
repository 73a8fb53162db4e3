"""The verify step: prove the Qdrant copy equals the ChromaDB source, record by record (SPEC "Verification").

A matching count is where most migration tools stop; this step compares every record. Per collection:

``config``
    the target collection exists, has the source's dimension and the mapped distance, and (alias cutover)
    the alias named like the source collection points at it.
``count``
    Qdrant's exact count equals the number of source ids.
``identity``
    the set of Chroma ids equals the set of payload ``chroma_id`` values; every point id follows the SPEC
    rule (:func:`runbook_lib.core.mapping.point_id`); no ``chroma_id`` is carried by two points.
``vectors``
    every vector (or a deterministic sample, ``vector_check=N``) equal within ``tolerance`` (max absolute
    component difference), the source normalised first for Cosine since Qdrant normalises on write.
``payload``
    exactly the SPEC keys; document, metadata (type-strict and recursive: ``1``, ``1.0`` and ``True``
    differ, lists element by element) and uri (payload ``uri`` absent <=> source uri ``None``) equal.
``search``
    for ``sample_queries`` queries (stored vectors and perturbed ones, fixed seed), Qdrant's exact top-k
    equals the exact top-k computed with numpy from the source vectors (recall 1.0, ties at the k-th
    distance count as hits), and Qdrant's scores converted to Chroma distances equal the exact distances
    within :data:`runbook_lib.core.compare.SCORE_RTOL`. Agreement of Chroma's and Qdrant's approximate
    indexes is measured and reported as information only.

Run-wide, ``source unchanged``: when the run has a backup, the live ChromaDB directory still matches the
checksums taken when the backup was made.

Streaming: the source is read in ``batch_size`` batches (a reader thread fetches the next batch while the
current one is compared); each batch's points are retrieved from Qdrant by their expected point ids, and
the exact top-k of every query is kept as a running top-k across batches. Memory holds the id lists (as
the migration does), one or two batches of vectors, and ``sample_queries * k`` neighbours -- never all
vectors. The target is scanned point by point (payload ``chroma_id`` only) only when the count or the
expected points do not match: when Qdrant's exact count equals the number of source ids and every
expected point id is present carrying its own ``chroma_id``, the point sets are equal by counting
(expected ids are distinct, so there is no room for an extra or duplicate point).

Which source is read: a run migrated by this runbook has ``state/migrate_checkpoint.json``; with a backup
the source is a scratch copy of the (checksum-verified) backup -- exactly what was migrated -- and the
target names come from the checkpoint. A Chroma server source (no backup) is read live. A run without a
checkpoint (migrated by another tool) reads the live source and expects each collection under its own name.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runbook_lib.config.params import VerifyParams
from runbook_lib.core.compare import (
    ABSENT,
    SCORE_RTOL,
    RunningTopK,
    distances_close,
    payload_differences,
    strict_equal,
)
from runbook_lib.core.mapping import (
    PAYLOAD_ID_KEY,
    chroma_distances,
    normalise_rows,
    point_id,
    qdrant_distance,
    qdrant_score_to_chroma_distance,
)
from runbook_lib.core.plan import target_names
from runbook_lib.errors import ConfigError, RunbookError
from runbook_lib.runtime.display import progress
from runbook_lib.runtime.step import Step
from runbook_lib.source.backup import Backup, load_backup, source_unchanged, verify_backup
from runbook_lib.source.chroma import ChromaSource, RecordBatch
from runbook_lib.state.checkpoint import read_checkpoint
from runbook_lib.state.run import Run
from runbook_lib.target.qdrant import QdrantTarget

log = logging.getLogger(__name__)


#: How many ids / differences are listed per check (totals are always complete).
MAX_LISTED = 20
#: Query selection is deterministic: seeded by this and the collection name.
QUERY_SEED = 20240601
#: Perturbed queries: stored vector + Gaussian noise of this fraction of the vector's norm.
PERTURBATION = 0.05

CHECKS = ("config", "count", "identity", "vectors", "payload", "search")
SOURCE_CHECK = "source unchanged"
PASS, FAIL, SKIPPED, NOT_RUN = "pass", "FAIL", "skipped", "not run"

#: Histogram of the max absolute difference per vector: two bins per decade from 1e-12 to 10, plus an
#: underflow bin (below 1e-12, exact zeros included) and an overflow bin (10 and above, NaN included).
HIST_EDGES = np.logspace(-12, 1, 27)


# --- parameters -------------------------------------------------------------------------------------
# --- results --------------------------------------------------------------------------------------------
@dataclass
class Check:
    """The outcome of one check on one collection."""

    name: str
    result: str = NOT_RUN
    summary: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)

    def set(self, ok: bool, summary: str, **numbers: Any) -> None:
        self.result = PASS if ok else FAIL
        self.summary = summary
        self.numbers.update(numbers)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "result": self.result, "summary": self.summary, "numbers": self.numbers}


class Differences:
    """The first :data:`MAX_LISTED` differences of each check, plus complete totals per check and field."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.listed: list[dict[str, Any]] = []
        self.totals: dict[str, int] = {}
        self.by_field: dict[str, dict[str, int]] = {}

    def add(self, check: str, record: str, fld: str, source: Any, target: Any, detail: str = "") -> None:
        self.totals[check] = self.totals.get(check, 0) + 1
        group = fld.split(".", 1)[0].split("[", 1)[0]
        counts = self.by_field.setdefault(check, {})
        counts[group] = counts.get(group, 0) + 1
        if self.totals[check] <= MAX_LISTED:
            self.listed.append(
                {
                    "collection": self.collection,
                    "check": check,
                    "id": record,
                    "field": fld,
                    "source": _shown(source),
                    "target": _shown(target),
                    "detail": detail,
                }
            )

    def first(self, check: str) -> list[dict[str, Any]]:
        return [d for d in self.listed if d["check"] == check]


def _shown(value: Any, limit: int = 300) -> Any:
    """A JSON-friendly rendering that keeps types visible (3 stays 3, 3.0 stays 3.0) and long text short."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"… ({len(value)} characters)"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, list | tuple) and len(value) > 40:
        return [_shown(v) for v in value[:40]] + [f"… ({len(value)} items)"]
    if isinstance(value, list | tuple):
        return [_shown(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _shown(v) for k, v in value.items()}
    return value


@dataclass
class CollectionReport:
    collection: str
    target: str
    alias: str | None
    space: str | None = None
    distance: str | None = None
    dimension: int | None = None
    records: int = 0
    status: str = "pending"  # verified | FAILED | skipped (empty)
    error: str | None = None
    seconds: float = 0.0
    checks: dict[str, Check] = field(default_factory=lambda: {name: Check(name) for name in CHECKS})
    differences: Differences | None = None
    migrate_status: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not any(c.result == FAIL for c in self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        diffs = self.differences
        return {
            "collection": self.collection,
            "target": self.target,
            "alias": self.alias,
            "space": self.space,
            "distance": self.distance,
            "dimension": self.dimension,
            "records": self.records,
            "status": self.status,
            "ok": self.ok,
            "error": self.error,
            "migrate_status": self.migrate_status,
            "seconds": round(self.seconds, 3),
            "checks": {name: c.to_dict() for name, c in self.checks.items()},
            "difference_totals": diffs.totals if diffs else {},
            "difference_fields": diffs.by_field if diffs else {},
            "differences": diffs.listed if diffs else [],
        }


@dataclass
class VerifyResult:
    """What the verify step found. Built by :func:`verify`, or read back from ``03_verify.json``."""

    ok: bool
    run_id: str
    source_read: str
    migrated_by: str
    settings: dict[str, Any]
    collections: list[dict[str, Any]] = field(default_factory=list)
    source_unchanged: dict[str, Any] = field(default_factory=dict)
    vector_histogram: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    total_records: int = 0
    seconds: float = 0.0
    figures: list[str] = field(default_factory=list)

    # --- the one line ------------------------------------------------------------------------------
    @property
    def verdict(self) -> str:
        verified = [c for c in self.collections if c["status"] == "verified"]
        skipped = [c for c in self.collections if c["status"].startswith("skipped")]
        if self.ok:
            k = self.settings.get("k")
            tol = self.settings.get("tolerance")
            which = "every vector" if self.settings.get("vector_check") == "all" else "sampled vectors"
            text = (
                f"VERIFIED: {len(verified)} collection(s), {self.total_records:,} records: counts, ids, {which} "
                f"(within {tol:g}), documents, metadata and uris equal; exact top-{k} search identical with "
                "matching distances"
            )
            if skipped:
                text += f"; {len(skipped)} empty collection(s) skipped"
            if self.source_unchanged.get("result") == PASS:
                text += "; the live source is unchanged since its backup"
            return text + "."
        problems: list[str] = []
        for c in self.collections:
            if c["ok"]:
                continue
            if c.get("error"):
                problems.append(f"{c['collection']}: {c['error']}")
                continue
            failed = [f"{name} ({chk['summary']})" for name, chk in c["checks"].items() if chk["result"] == FAIL]
            problems.append(f"{c['collection']}: " + ", ".join(failed))
        if self.source_unchanged.get("result") == FAIL:
            problems.append(f"source changed since the backup ({self.source_unchanged.get('summary')})")
        return "NOT VERIFIED: " + "; ".join(problems) + "."

    # --- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "run_id": self.run_id,
            "source_read": self.source_read,
            "migrated_by": self.migrated_by,
            "settings": self.settings,
            "total_records": self.total_records,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.total_records / self.seconds, 1) if self.seconds else None,
            "source_unchanged": self.source_unchanged,
            "collections": self.collections,
            "vector_histogram": self.vector_histogram,
            "warnings": self.warnings,
            "figures": self.figures,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerifyResult:
        if "collections" not in data:  # the step failed before it could compare anything
            raise RunbookError(f"The verify step did not finish: {data.get('error', 'no result was filed')}.")
        return cls(
            ok=bool(data["ok"]),
            run_id=data.get("run_id", ""),
            source_read=data.get("source_read", ""),
            migrated_by=data.get("migrated_by", ""),
            settings=data.get("settings", {}),
            collections=data["collections"],
            source_unchanged=data.get("source_unchanged", {}),
            vector_histogram=data.get("vector_histogram", {}),
            warnings=data.get("warnings", []),
            total_records=int(data.get("total_records", 0)),
            seconds=float(data.get("seconds", 0.0)),
            figures=data.get("figures", []),
        )

    # --- notebook helpers ------------------------------------------------------------------------------
    def table(self) -> Any:
        """One row per (collection, check): result and the numbers behind it."""
        import pandas as pd

        rows = []
        for c in self.collections:
            for name, chk in c["checks"].items():
                rows.append(
                    {
                        "collection": c["collection"],
                        "check": name,
                        "result": chk["result"],
                        "numbers": chk.get("summary", ""),
                    }
                )
        if self.source_unchanged:
            rows.append(
                {
                    "collection": "(whole source)",
                    "check": SOURCE_CHECK,
                    "result": self.source_unchanged["result"],
                    "numbers": self.source_unchanged.get("summary", ""),
                }
            )
        if not rows:
            return pd.DataFrame()
        return pd.DataFrame(rows).set_index(["collection", "check"])

    def summary(self) -> Any:
        """checks x collections: pass / FAIL / skipped / not run."""
        import pandas as pd

        data = {c["collection"]: {n: chk["result"] for n, chk in c["checks"].items()} for c in self.collections}
        frame = pd.DataFrame(data).T if data else pd.DataFrame()
        if self.source_unchanged and not frame.empty:
            frame[SOURCE_CHECK] = self.source_unchanged["result"]
        return frame

    def differences_table(self) -> Any:
        """The first differing records of every check: id, field, source value, Qdrant value, what differs."""
        import pandas as pd

        rows = [d for c in self.collections for d in c.get("differences", [])]
        if not rows:
            return pd.DataFrame(columns=["collection", "check", "id", "field", "source", "target", "detail"])
        return pd.DataFrame(rows)

    def search_table(self) -> Any:
        """Search parity per collection, with the approximate-index agreement (information only)."""
        import pandas as pd

        rows = []
        for c in self.collections:
            n = c["checks"]["search"]["numbers"]
            if not n:
                continue
            approx = n.get("approximate", {})
            rows.append(
                {
                    "collection": c["collection"],
                    "result": c["checks"]["search"]["result"],
                    "queries": n.get("queries"),
                    "k": n.get("k"),
                    "exact recall (min)": n.get("recall_min"),
                    "score mismatches": n.get("score_mismatches"),
                    "max score error": n.get("max_score_error"),
                    "Chroma index recall": approx.get("chroma_recall"),
                    "Qdrant index recall": approx.get("qdrant_recall"),
                    "Chroma vs Qdrant agreement": approx.get("agreement"),
                }
            )
        return pd.DataFrame(rows).set_index("collection") if rows else pd.DataFrame()

    def raise_if_failed(self) -> None:
        """Raise :class:`VerificationFailed` with the verdict when anything differs (the notebook's last cell)."""
        if not self.ok:
            from runbook_lib.errors import VerificationFailed

            raise VerificationFailed(self.verdict)


def load_result(run: Run) -> VerifyResult:
    """The verify result filed in ``run`` (what the notebook shows after a failed verification)."""
    data = run.read_result("verify")
    if data is None:
        raise RunbookError(f"Run {run.run_id} has no verify result yet.")
    return VerifyResult.from_dict(data)


# --- search queries ----------------------------------------------------------------------------------------
@dataclass
class Query:
    label: str
    vector: np.ndarray  # float32


def pick_queries(source: ChromaSource, name: str, ids: Sequence[str], count: int, dim: int) -> list[Query]:
    """``count`` deterministic queries: half stored vectors, half stored vectors plus noise.

    Zero vectors are not used as queries (their cosine similarity is undefined).
    """
    rng = np.random.default_rng([QUERY_SEED, zlib.crc32(name.encode())])
    picks = rng.choice(len(ids), size=min(len(ids), count + 8), replace=False)
    chosen = [ids[int(i)] for i in picks]
    batch = source.fetch(name, chosen, expected_dim=dim)
    norms = np.linalg.norm(batch.embeddings.astype(np.float64), axis=1)
    usable = [(rid, vec, nrm) for rid, vec, nrm in zip(batch.ids, batch.embeddings, norms, strict=True) if nrm > 0]
    queries: list[Query] = []
    if not usable:
        for n in range(count):
            queries.append(Query(f"q{n}: random vector", rng.standard_normal(dim).astype(np.float32)))
        return queries
    stored = (count + 1) // 2
    for n in range(count):
        rid, vec, nrm = usable[n % len(usable)]
        if n < stored:
            queries.append(Query(f"q{n}: stored vector of {rid!r}", np.asarray(vec, dtype=np.float32)))
        else:
            noise = rng.standard_normal(dim) * (PERTURBATION * nrm / math.sqrt(dim))
            queries.append(
                Query(
                    f"q{n}: vector of {rid!r} + {PERTURBATION:.0%} noise",
                    (np.asarray(vec, dtype=np.float64) + noise).astype(np.float32),
                )
            )
    return queries


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


# --- planning what to verify ---------------------------------------------------------------------------------
@dataclass
class Planned:
    source: str
    target: str
    alias: str | None
    migrate_status: str | None


def _plan(source: ChromaSource, checkpoint: dict[str, Any] | None, requested: list[str], run_id: str) -> list[Planned]:
    if checkpoint is None:
        out = []
        for name in source.resolve_collections(requested):
            target, alias = target_names(name, run_id, "plain")
            out.append(Planned(name, target, alias, None))
        return out
    entries: dict[str, dict[str, Any]] = checkpoint.get("collections", {})
    names = list(dict.fromkeys(requested)) if requested else list(entries)
    unknown = [n for n in names if n not in entries]
    if unknown:
        raise ConfigError(
            f"Run {run_id} did not migrate collection {unknown[0]!r} (it migrated {', '.join(entries) or 'none'}): "
            "fix the `collections` parameter, or verify another tool's migration in a new run (empty run_id)."
        )
    return [Planned(n, entries[n].get("target") or n, entries[n].get("alias"), entries[n].get("status")) for n in names]


# --- verifying one collection ----------------------------------------------------------------------------------
class _Histogram:
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


def _verify_collection(
    source: ChromaSource,
    target: QdrantTarget,
    plan: Planned,
    p: VerifyParams,
    hist: _Histogram,
    overall: Any,
) -> CollectionReport:
    t0 = time.perf_counter()
    rep = CollectionReport(collection=plan.source, target=plan.target, alias=plan.alias)
    rep.migrate_status = plan.migrate_status
    rep.differences = Differences(plan.source)
    try:
        _run_checks(source, target, rep, p, hist, overall)
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
    log.info("%s -> %s: %s (%d records, %.1f s)", rep.collection, rep.target, rep.status, rep.records, rep.seconds)
    return rep


def _run_checks(
    source: ChromaSource,
    target: QdrantTarget,
    rep: CollectionReport,
    p: VerifyParams,
    hist: _Histogram,
    overall: Any,
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
    checks["config"].set(
        not problems,
        "; ".join(problems)
        or f"{found.distance}, dimension {found.size}" + (f", alias {rep.alias!r}" if rep.alias else ""),
        collection=tname,
        dimension={"source": rep.dimension, "target": found.size},
        distance={"expected": rep.distance, "target": found.distance, "chroma_space": rep.space},
        alias={"name": rep.alias, "points_to": alias_target} if rep.alias else None,
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
            found_diffs = payload_differences(cid, batch.documents[j], batch.metadatas[j], batch.uris[j], payload)
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
    _identity(target, rep, ids, tcount, missing_expected, foreign_ids, pid_collisions, p.batch_size)

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
        _search(source, target, rep, queries, topk, k)
    else:
        checks["search"].result = SKIPPED
        checks["search"].summary = "no records to search"


def _identity(
    target: QdrantTarget,
    rep: CollectionReport,
    ids: list[str],
    tcount: int,
    missing_expected: int,
    foreign_ids: int,
    pid_collisions: list[tuple[str, str]],
    page: int,
) -> None:
    assert rep.differences is not None
    diffs = rep.differences
    n = len(ids)
    for cid, pid in pid_collisions[:MAX_LISTED]:
        diffs.add("identity", cid, "point id", "a point of its own", pid, "two Chroma ids map to one point id")
    if tcount == n and missing_expected == 0 and foreign_ids == 0:
        # Every expected (distinct) point exists with its own chroma_id and the exact count is n: nothing else.
        rep.checks["identity"].set(
            not pid_collisions,
            f"{n:,} ids equal; every point id follows the id rule",
            source_ids=n,
            target_chroma_ids=n,
            missing=0,
            missing_ids=[],
            extra=0,
            extra_ids=[],
            duplicated=0,
            wrong_point_id=0,
            point_id_collisions=len(pid_collisions),
            full_scan=False,
        )
        return
    # Something is off: scan every point's chroma_id to name the missing, extra and duplicated ids.
    holders: dict[str, list[str]] = {}
    no_chroma_id: list[str] = []
    wrong_pid: list[tuple[str, str]] = []
    scanned = 0
    for pid, cid in target.iter_chroma_ids(rep.target, page=max(page, 256)):
        scanned += 1
        if not isinstance(cid, str):
            no_chroma_id.append(pid)
            continue
        holders.setdefault(cid, []).append(pid)
        if point_id(cid) != pid:
            wrong_pid.append((cid, pid))
    source_set = set(ids)
    missing = [i for i in ids if i not in holders]
    extra = sorted(c for c in holders if c not in source_set)
    duplicated = sorted(c for c, pids in holders.items() if len(pids) > 1)
    for cid in missing[:MAX_LISTED]:
        diffs.add("identity", cid, "presence", "present", ABSENT, f"no point carries chroma_id {cid!r}")
    for cid in extra[:MAX_LISTED]:
        diffs.add("identity", cid, "presence", ABSENT, f"point {holders[cid][0]}", "not a source id")
    for pid in no_chroma_id[:MAX_LISTED]:
        diffs.add("identity", f"(point {pid})", "chroma_id", ABSENT, ABSENT, "point without a payload chroma_id")
    for cid in duplicated[:MAX_LISTED]:
        diffs.add(
            "identity",
            cid,
            "duplicate",
            "1 point",
            f"{len(holders[cid])} points: {holders[cid][:5]}",
            "one chroma_id on several points",
        )
    for cid, pid in wrong_pid[:MAX_LISTED]:
        diffs.add("identity", cid, "point id", point_id(cid), pid, "point id does not follow the id rule")
    ok = not (missing or extra or no_chroma_id or duplicated or wrong_pid or pid_collisions or foreign_ids)
    parts = [f"source {n:,} ids, Qdrant {len(holders):,} distinct chroma_ids on {scanned:,} points"]
    parts += [
        f"{label} {len(items):,}" + (f" (first {items[0]!r})" if items else "")
        for label, items in (
            ("missing", missing),
            ("extra", extra),
            ("duplicated", duplicated),
            ("wrong point id", [c for c, _ in wrong_pid]),
            ("without chroma_id", no_chroma_id),
        )
        if items
    ]
    if foreign_ids:
        parts.append(f"{foreign_ids} expected point(s) carry another chroma_id")
    rep.checks["identity"].set(
        ok,
        "; ".join(parts),
        source_ids=n,
        target_points=scanned,
        target_chroma_ids=len(holders),
        missing=len(missing),
        missing_ids=missing[:MAX_LISTED],
        extra=len(extra) + len(no_chroma_id),
        extra_ids=extra[:MAX_LISTED] + [f"(point {pid} without chroma_id)" for pid in no_chroma_id[:MAX_LISTED]],
        duplicated=len(duplicated),
        duplicated_ids=duplicated[:MAX_LISTED],
        wrong_point_id=len(wrong_pid),
        wrong_point_ids=[
            {"chroma_id": c, "point_id": pid, "expected": point_id(c)} for c, pid in wrong_pid[:MAX_LISTED]
        ],
        foreign_chroma_id=foreign_ids,
        point_id_collisions=len(pid_collisions),
        full_scan=True,
    )


def _search(
    source: ChromaSource,
    target: QdrantTarget,
    rep: CollectionReport,
    queries: list[Query],
    topk: RunningTopK,
    k: int,
) -> None:
    assert rep.differences is not None and rep.space is not None and rep.dimension is not None
    diffs = rep.differences
    space = rep.space
    name, tname = rep.collection, rep.target
    recalls: list[float] = []
    score_mismatches = 0
    max_abs_err = 0.0
    max_rel_err = 0.0
    approx_qdrant: list[list[str]] = []
    exact_sets: list[list[str]] = []
    for j, q in enumerate(queries):
        exact_ids, exact_d = topk.result(j)
        exact_sets.append(exact_ids)
        kth = float(exact_d[-1])
        exact_of = dict(zip(exact_ids, (float(x) for x in exact_d), strict=True))
        hits = target.query(tname, q.vector.tolist(), limit=k, exact=True)
        hit_ids = [(h.payload or {}).get(PAYLOAD_ID_KEY) for h in hits]
        hit_d = [float(qdrant_score_to_chroma_distance(float(h.score), space)) for h in hits]
        # Hits outside the exact top-k: their true distance, from the source (ties at the k-th distance count).
        outside = list(dict.fromkeys(c for c in hit_ids if isinstance(c, str) and c not in exact_of))
        if outside:
            present = set(source.collection(name).get(ids=outside, include=[])["ids"])
            known = [c for c in outside if c in present]
            if known:
                fetched = source.fetch(name, known, expected_dim=rep.dimension)
                tie_d = chroma_distances(q.vector, fetched.embeddings, space)
                exact_of.update((rid, float(dist)) for rid, dist in zip(fetched.ids, tie_d, strict=True))
        counted: set[str] = set()
        for hit, cid, d_q in zip(hits, hit_ids, hit_d, strict=True):
            true_d = exact_of.get(cid) if isinstance(cid, str) else None
            if true_d is None or not isinstance(cid, str):
                continue  # not a source record: an extra point answered the query
            if cid not in counted and (cid in exact_ids or true_d <= kth or distances_close(true_d, kth)):
                counted.add(cid)
            err = abs(d_q - true_d)
            max_abs_err = max(max_abs_err, err)
            max_rel_err = max(max_rel_err, err / max(1.0, abs(true_d)))
            if not distances_close(d_q, true_d):
                score_mismatches += 1
                diffs.add(
                    "search",
                    q.label,
                    f"distance of {cid!r}",
                    true_d,
                    d_q,
                    f"Qdrant score {hit.score!r} converted for Chroma {space!r}; tolerance {SCORE_RTOL:g} relative",
                )
        correct = len(counted)
        recall = correct / k if k else 1.0
        recalls.append(recall)
        if recall < 1.0:
            lost = [c for c in exact_ids if c not in hit_ids]
            diffs.add(
                "search",
                q.label,
                f"exact top-{k}",
                exact_ids,
                [c if isinstance(c, str) else f"(point {h.id})" for c, h in zip(hit_ids, hits, strict=True)],
                f"recall {recall:.2f}; not returned by Qdrant: {lost[:5]}",
            )
        approx = target.query(tname, q.vector.tolist(), limit=k, exact=False, with_payload=True)
        approx_qdrant.append([str((h.payload or {}).get(PAYLOAD_ID_KEY)) for h in approx])
    ok = min(recalls) == 1.0 and score_mismatches == 0
    matrix = np.stack([q.vector for q in queries])
    chroma = source.query_ids(name, matrix, k)
    approx_info: dict[str, Any] = {"qdrant_recall": _mean_overlap(approx_qdrant, exact_sets, k)}
    if isinstance(chroma, str):
        approx_info["chroma"] = chroma
    else:
        approx_info["chroma_recall"] = _mean_overlap(chroma, exact_sets, k)
        approx_info["agreement"] = _mean_overlap(chroma, approx_qdrant, k)
    rep.checks["search"].set(
        ok,
        f"{len(queries)} queries, exact top-{k} recall min {min(recalls):.2f}, {score_mismatches} distance(s) off "
        f"(max relative error {max_rel_err:.2g}, tolerance {SCORE_RTOL:g})",
        queries=len(queries),
        k=k,
        recall_mean=float(np.mean(recalls)),
        recall_min=float(min(recalls)),
        score_mismatches=score_mismatches,
        max_score_error=max_abs_err,
        max_score_relative_error=max_rel_err,
        score_tolerance_relative=SCORE_RTOL,
        approximate=approx_info,
    )


def _mean_overlap(a: list[list[str]], b: list[list[str]], k: int) -> float | None:
    if not a or not k:
        return None
    return round(float(np.mean([len(set(x) & set(y)) / k for x, y in zip(a, b, strict=True)])), 4)


# --- the step ----------------------------------------------------------------------------------------------------
def _open_source(step: Step, checkpoint: dict[str, Any] | None) -> tuple[ChromaSource, Backup | None, str]:
    chroma = step.settings.chroma
    backup_path = (checkpoint or {}).get("backup_path")
    if backup_path:
        if chroma.is_server:
            raise ConfigError(
                f"Run {step.run.run_id} was migrated from a ChromaDB directory (backup {backup_path}) but "
                "CHROMA_HOST is set: unset CHROMA_HOST to verify this run."
            )
        backup = load_backup(Path(backup_path))
        verify_backup(backup)
        return (
            ChromaSource.open(chroma, copy_from=backup.data_dir),
            backup,
            f"a scratch copy of the run's checksum-verified backup {backup.path}",
        )
    where = "the live Chroma server" if chroma.is_server else "a scratch copy of the live directory"
    return ChromaSource.open(chroma), None, f"{where} ({chroma.describe()})"


def _source_unchanged(step: Step, backup: Backup | None) -> dict[str, Any]:
    chk = Check(SOURCE_CHECK)
    if backup is None:
        chk.result = SKIPPED
        chk.summary = "no file backup in this run (a Chroma server, or a migration by another tool): nothing to compare"
        return chk.to_dict()
    live = Path(backup.manifest.get("source") or step.settings.chroma.persist_dir)
    problems = source_unchanged(backup, live)
    files = len(backup.manifest.get("source_files", {}))
    chk.set(
        not problems,
        f"{files} files of {live} match the checksums taken at backup time"
        if not problems
        else f"{len(problems)} file(s) of {live} changed since the backup (first: {problems[0]}); records written "
        "after the backup are not in Qdrant",
        live_directory=str(live),
        backup=str(backup.path),
        files=files,
        problems=problems[:MAX_LISTED],
        problems_total=len(problems),
    )
    return chk.to_dict()


def verify(step: Step) -> VerifyResult:
    """The verify step (``03_verify.ipynb``)."""
    p: VerifyParams = step.params  # type: ignore[assignment]
    t0 = time.perf_counter()
    checkpoint = read_checkpoint(step.run)
    source, backup, source_read = _open_source(step, checkpoint)
    result = VerifyResult(
        ok=False,
        run_id=step.run.run_id,
        source_read=source_read,
        migrated_by=(
            "this runbook (state/migrate_checkpoint.json)"
            if checkpoint is not None
            else "another tool (no migrate checkpoint in this run): collections are expected under their own names"
        ),
        settings={
            "vector_check": p.vector_check,
            "tolerance": p.tolerance,
            "k": p.k,
            "sample_queries": p.sample_queries,
            "batch_size": p.batch_size,
            "score_tolerance_relative": SCORE_RTOL,
            "perturbation": PERTURBATION,
            "query_seed": QUERY_SEED,
        },
    )
    migrated_to = (checkpoint or {}).get("target")
    if migrated_to and migrated_to != step.settings.qdrant.describe():
        result.warnings.append(
            f"Run {step.run.run_id} migrated to {migrated_to}, but this verification reads "
            f"{step.settings.qdrant.describe()}: check QDRANT_URL / QDRANT_PATH."
        )
    hist = _Histogram()
    try:
        with QdrantTarget(step.settings.qdrant) as target:
            plans = _plan(source, checkpoint, p.collections, step.run.run_id)
            if checkpoint is not None and not p.collections:
                others = sorted(set(source.collection_names()) - {pl.source for pl in plans})
                if others:
                    result.warnings.append(
                        f"Not migrated by run {step.run.run_id}, hence not verified: {', '.join(others)}."
                    )
            overall = progress(total=0, desc="verify", unit="rec")
            for pl in plans:
                overall.total += source.count(pl.source)  # grows as it goes: one collection in memory at a time
                overall.refresh()
                rep = _verify_collection(source, target, pl, p, hist, overall)
                source.release()
                result.collections.append(rep.to_dict())
                result.total_records += rep.records
            overall.close()
    finally:
        source.close()
    result.source_unchanged = _source_unchanged(step, backup)
    result.vector_histogram = hist.to_dict(p.tolerance)
    result.seconds = time.perf_counter() - t0
    result.ok = all(c["ok"] for c in result.collections) and result.source_unchanged["result"] != FAIL
    if not result.collections:
        result.warnings.append("No collection to verify.")
    from runbook_lib.steps.verify.charts import verify_charts  # imported here: verify_charts imports this module

    result.figures = verify_charts(step, result)
    log.info("%s", result.verdict)
    return result

"""Search parity, the ``search`` check: deterministic query picking and Qdrant's exact top-k against the source's.

For ``sample_queries`` queries per collection (stored vectors and perturbed ones, seeded by :data:`QUERY_SEED` and
the collection name), Qdrant's exact top-k must equal the exact top-k computed with numpy from the source vectors
(recall 1.0, ties at the k-th distance count as hits; the running top-k is kept across the streamed batches by
:class:`runbook_lib.core.compare.RunningTopK`), and Qdrant's scores converted to Chroma distances must equal the
exact distances within :data:`runbook_lib.core.compare.SCORE_RTOL`. Agreement of Chroma's and Qdrant's approximate
indexes is measured and reported as information only.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from runbook_lib.chroma.base import ChromaReader
from runbook_lib.core.compare import SCORE_RTOL, RunningTopK, distances_close
from runbook_lib.core.mapping import PAYLOAD_ID_KEY, chroma_distances, qdrant_score_to_chroma_distance
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.steps.verify.result import CollectionReport

#: Query selection is deterministic: seeded by this and the collection name.
QUERY_SEED = 20240601
#: Perturbed queries: stored vector + Gaussian noise of this fraction of the vector's norm.
PERTURBATION = 0.05


@dataclass
class Query:
    """One search query: its label (named in the differences) and its vector."""

    label: str
    vector: np.ndarray  # float32


def pick_queries(source: ChromaReader, name: str, ids: Sequence[str], count: int, dim: int) -> list[Query]:
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


def check_search(
    source: ChromaReader,
    target: QdrantStore,
    rep: CollectionReport,
    queries: list[Query],
    topk: RunningTopK,
    k: int,
) -> None:
    """Run ``queries`` against Qdrant (exact and approximate) and set ``rep``'s ``search`` check."""
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
            present = source.present_ids(name, outside)
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

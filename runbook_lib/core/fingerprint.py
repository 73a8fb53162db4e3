"""What a record looked like, in a few bytes: how a sync tells, without a second copy of the data, which records
changed on either side since the run last synchronised.

Per record, three parts (all computed from data already in hand, in the pass that reads it):

``source``
    sha256 (16 bytes) of the record exactly as ChromaDB holds it: the float32 vector's bytes, the document, the
    metadata (type-strict: ``1``, ``1.0`` and ``True`` differ) and the uri. Reading the same record again gives
    the same digest, so a change made in ChromaDB is always seen.
``payload``
    sha256 (16 bytes) of the document, metadata and uri alone, the same whether read from ChromaDB or from the
    Qdrant payload (``metadata`` ``None`` is ``{}``, as the SPEC payload writes it).
``sketch``
    the vector as Qdrant stores it (unit length for Cosine) projected on 8 fixed random directions (32 bytes),
    then the sha256 (16 bytes) of its float32 bytes (ledgers written before it hold the projections alone).
    Equal digests: the same vector. Projections further apart than :data:`SKETCH_TOLERANCE` of its norm: another
    vector. In between (:data:`CLOSE`) the sketch cannot tell a float32 ulp of re-normalisation (a Qdrant server
    may do that) from a small edit that verify would report (its tolerance is 1e-6, far inside the projections'):
    the sync then compares the full vectors (:func:`runbook_lib.steps.sync.diff.diff_collection`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from runbook_lib.core.mapping import normalise_rows

SKETCH_DIRECTIONS = 8
#: Two sketches agree when every projection differs by at most this share of the vector's norm (and at least
#: this much in absolute terms): far above float32 rounding, far below any real change of an embedding.
SKETCH_TOLERANCE = 1e-5
_PROJECTIONS = SKETCH_DIRECTIONS * 4
#: What :func:`compare_sketches` answers.
SAME, CLOSE, DIFFERENT = "same", "close", "different"


@dataclass(frozen=True)
class Fingerprint:
    source: bytes
    payload: bytes
    sketch: bytes


def _canonical(value: Any) -> Any:
    """JSON-ready and type-tagged where JSON would merge types (NaN, infinities)."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return _canonical(value.item())
    return value


def payload_digest(document: str | None, metadata: Mapping[str, Any] | None, uri: str | None) -> bytes:
    meta = dict(metadata or {})
    try:
        # the common case, without walking the values: plain JSON types, finite floats, string keys. It gives the
        # very text the canonical form below would (that form only differs where this one raises).
        if not all(isinstance(k, str) for k in meta):
            raise TypeError
        text = json.dumps(
            [document, meta, uri], sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    except (TypeError, ValueError):
        text = json.dumps([document, _canonical(meta), uri], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


def source_digest(vector: np.ndarray, payload: bytes) -> bytes:
    digest = hashlib.sha256(np.ascontiguousarray(vector, dtype="<f4").tobytes())
    digest.update(payload)
    return digest.digest()[:16]


@lru_cache(maxsize=16)
def _directions(dim: int) -> np.ndarray:
    rng = np.random.default_rng([20261130, dim])
    d = rng.standard_normal((SKETCH_DIRECTIONS, dim))
    return (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float64)


def sketches(target_vectors: np.ndarray) -> list[bytes]:
    """The sketch of each vector in its Qdrant form: 8 float32 projections, then the digest of its float32 bytes."""
    exact = np.ascontiguousarray(target_vectors, dtype="<f4")
    v = exact.astype(np.float64)
    if v.ndim != 2 or v.shape[0] == 0:
        return [b""] * (0 if v.ndim != 2 else v.shape[0])
    projections = (v @ _directions(v.shape[1]).T).astype("<f4")
    return [
        p.tobytes() + hashlib.sha256(row.tobytes()).digest()[:16] for p, row in zip(projections, exact, strict=True)
    ]


def fingerprints(
    embeddings: np.ndarray,
    documents: Sequence[str | None],
    metadatas: Sequence[Mapping[str, Any] | None],
    uris: Sequence[str | None],
    *,
    cosine: bool,
    target_vectors: np.ndarray | None = None,
) -> list[Fingerprint]:
    """Fingerprints of source records (``embeddings`` as ChromaDB holds them). ``target_vectors``: their Qdrant
    form when the caller already has it (the migration normalises once for both)."""
    vectors = np.asarray(embeddings, dtype=np.float32)
    if target_vectors is None:
        target_vectors = normalise_rows(vectors) if cosine else vectors
    sk = sketches(target_vectors)
    out = []
    for i, (doc, meta, uri) in enumerate(zip(documents, metadatas, uris, strict=True)):
        pay = payload_digest(doc, meta, uri)
        out.append(Fingerprint(source_digest(vectors[i], pay), pay, sk[i]))
    return out


def target_fingerprints(
    vectors: np.ndarray, documents: Sequence[str | None], metadatas: Sequence[Any], uris: Sequence[str | None]
) -> list[Fingerprint]:
    """The payload digest and sketch of each point of a page as Qdrant returns it, one projection for the page
    (``source`` is empty: a point is not the source's exact bytes)."""
    sk = sketches(np.asarray(vectors, dtype=np.float32))
    return [
        Fingerprint(b"", payload_digest(d, m, u), sk[i])
        for i, (d, m, u) in enumerate(zip(documents, metadatas, uris, strict=True))
    ]


def compare_sketches(a: bytes, b: bytes) -> str:
    """:data:`SAME` vector, :data:`DIFFERENT` vectors, or :data:`CLOSE`: the full vectors must be compared."""
    if len(a) > _PROJECTIONS and len(a) == len(b) and a[_PROJECTIONS:] == b[_PROJECTIONS:]:
        return SAME
    x = np.frombuffer(a[:_PROJECTIONS], dtype="<f4").astype(np.float64)
    y = np.frombuffer(b[:_PROJECTIONS], dtype="<f4").astype(np.float64)
    if x.shape != y.shape or len(a) < _PROJECTIONS or len(b) < _PROJECTIONS:
        return DIFFERENT
    scale = max(1.0, float(np.abs(x).max(initial=0.0)), float(np.abs(y).max(initial=0.0)))
    return CLOSE if np.all(np.abs(x - y) <= SKETCH_TOLERANCE * scale) else DIFFERENT


def sketches_agree(a: bytes, b: bytes) -> bool:
    """Not :data:`DIFFERENT`: the same vector, or one within a float32 ulp or a small edit of it."""
    return compare_sketches(a, b) != DIFFERENT

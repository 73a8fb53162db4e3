"""The fixed ChromaDB -> Qdrant data mapping (SPEC "Data mapping"): point ids, payload, distance.

Pure functions, no I/O: the migration, the verification and the app wrapper all use these, so the
rules live in exactly one place.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runbook_lib.errors import ConfigError

#: A canonical, lowercase, hyphenated UUID (8-4-4-4-12 hex digits).
_CANONICAL_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

#: Chroma space -> Qdrant distance name (``qdrant_client.models.Distance`` values).
CHROMA_TO_QDRANT_DISTANCE: dict[str, str] = {"cosine": "Cosine", "l2": "Euclid", "ip": "Dot"}
QDRANT_TO_CHROMA_SPACE: dict[str, str] = {v: k for k, v in CHROMA_TO_QDRANT_DISTANCE.items()}

PAYLOAD_ID_KEY = "chroma_id"
PAYLOAD_DOCUMENT_KEY = "document"
PAYLOAD_METADATA_KEY = "metadata"
PAYLOAD_URI_KEY = "uri"


def is_canonical_uuid(value: str) -> bool:
    return bool(_CANONICAL_UUID.match(value))


def point_id(chroma_id: str) -> str:
    """The Qdrant point id for a Chroma id.

    The Chroma id itself when it is a canonical lowercase hyphenated UUID, else
    ``uuid5(NAMESPACE_URL, chroma_id)``. Because Qdrant parses any UUID spelling (upper case,
    no hyphens, braces) to the same point, only the canonical spelling is passed through: every
    other spelling is hashed, so distinct Chroma ids never share a point.
    """
    if not isinstance(chroma_id, str):
        raise TypeError(f"Chroma ids are strings, got {type(chroma_id).__name__}")
    if is_canonical_uuid(chroma_id):
        return chroma_id
    return str(uuid.uuid5(uuid.NAMESPACE_URL, chroma_id))


def id_collisions(chroma_ids: Sequence[str]) -> list[tuple[str, str]]:
    """Pairs of distinct Chroma ids that map to the same point id (SPEC: they must never share a point).

    E.g. ``"https://x/doc1"`` and ``str(uuid5(NAMESPACE_URL, "https://x/doc1"))``. Each pair is
    ``(first id seen, colliding id)``, in input order.
    """
    first: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for cid in dict.fromkeys(chroma_ids):
        pid = point_id(cid)
        seen = first.setdefault(pid, cid)
        if seen != cid:
            pairs.append((seen, cid))
    return pairs


def id_scheme(chroma_ids: Sequence[str]) -> str:
    """Describe which id rule applies to a set of ids (for the dry-run plan)."""
    n_uuid = sum(1 for i in chroma_ids if is_canonical_uuid(i))
    if n_uuid == len(chroma_ids):
        return "chroma id (canonical UUIDs)"
    if n_uuid == 0:
        return "uuid5(NAMESPACE_URL, chroma id)"
    return f"mixed: {n_uuid} canonical UUIDs kept, {len(chroma_ids) - n_uuid} hashed with uuid5"


def build_payload(
    chroma_id: str,
    document: str | None,
    metadata: Mapping[str, Any] | None,
    uri: str | None = None,
) -> dict[str, Any]:
    """The default payload layout. User metadata is nested, so no key can shadow another."""
    payload: dict[str, Any] = {
        PAYLOAD_ID_KEY: chroma_id,
        PAYLOAD_DOCUMENT_KEY: document,
        PAYLOAD_METADATA_KEY: dict(metadata) if metadata else {},
    }
    if uri is not None:
        payload[PAYLOAD_URI_KEY] = uri
    return payload


def chroma_space(metadata: Mapping[str, Any] | None, configuration: Mapping[str, Any] | None) -> str:
    """The collection's distance space: ``hnsw:space`` metadata first, then configuration, else ``l2``.

    chromadb 1.x reports a default configuration for databases written by 0.5, so the metadata
    (what 0.x actually used) wins over the configuration.
    """
    space = (metadata or {}).get("hnsw:space")
    if not space and configuration:
        for index_kind in ("hnsw", "spann"):
            section = configuration.get(index_kind)
            if isinstance(section, Mapping) and section.get("space"):
                space = section["space"]
                break
    space = str(space or "l2").lower()
    if space not in CHROMA_TO_QDRANT_DISTANCE:
        raise ConfigError(
            f"Unknown Chroma distance space {space!r}: expected one of {', '.join(sorted(CHROMA_TO_QDRANT_DISTANCE))}."
        )
    return space


def qdrant_distance(space: str) -> str:
    """Chroma ``cosine``/``l2``/``ip`` -> Qdrant ``Cosine``/``Euclid``/``Dot``."""
    try:
        return CHROMA_TO_QDRANT_DISTANCE[space]
    except KeyError as exc:
        raise ConfigError(
            f"Unknown Chroma distance space {space!r}: expected one of {', '.join(sorted(CHROMA_TO_QDRANT_DISTANCE))}."
        ) from exc


def normalise_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise each row (zero rows stay zero), as Qdrant does for Cosine collections."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    safe = np.where(norms > 0, norms, 1.0)
    return (vectors / safe).astype(np.float32)


def qdrant_score_to_chroma_distance(score: float | np.ndarray, space: str) -> float | np.ndarray:
    """Convert a Qdrant score to Chroma's distance for the same pair of vectors.

    Cosine: Qdrant returns cosine similarity, Chroma ``1 - cos``. Dot: Qdrant returns the dot
    product, Chroma ``1 - dot``. Euclid: Qdrant returns the Euclidean distance, Chroma its square.
    """
    if space == "cosine":
        return 1.0 - score
    if space == "ip":
        return 1.0 - score
    if space == "l2":
        return score * score
    raise ValueError(f"unknown space {space!r}")


def chroma_distances(query: np.ndarray, vectors: np.ndarray, space: str) -> np.ndarray:
    """Exact Chroma distances from one query to each row of ``vectors`` (float64 for stable ranking)."""
    q = np.asarray(query, dtype=np.float64)
    m = np.asarray(vectors, dtype=np.float64)
    if space == "l2":
        diff = m - q
        return np.einsum("ij,ij->i", diff, diff)
    if space == "ip":
        return 1.0 - m @ q
    if space == "cosine":
        qn = np.linalg.norm(q)
        mn = np.linalg.norm(m, axis=1)
        denom = np.where((mn * qn) > 0, mn * qn, 1.0)
        return 1.0 - (m @ q) / denom
    raise ValueError(f"unknown space {space!r}")

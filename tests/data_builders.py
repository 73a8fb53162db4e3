"""Awkward ChromaDB data for tests: the records real users have and a migration must carry unchanged.

``create_awkward_db(path)`` writes a small persistent ChromaDB with four collections:

* ``awkward_cosine`` -- cosine declared via collection metadata ``hnsw:space``, dim 3. Unicode ids, a
  2,000-character id, one UUID spelled five ways (canonical lowercase, upper case, without hyphens, in braces,
  as a URN: only the first may become the Qdrant point id as is), ``"1"``/``"01"``/``"001"``, ids with
  spaces, slashes, tabs and newlines; metadata keys named ``document``, ``chroma_id``, ``__id__``, ``uri``
  and ``metadata`` (they must not shadow the real fields); list metadata of every element type; ``1``,
  ``1.0`` and ``True`` under different keys and under the same key in different records; an int beyond
  2**53; records without a document, with an empty document, with and without uris, without metadata; a
  zero vector; two records with the same vector ("1" and "dup-of-1").
* ``empty_one`` -- l2 declared via ``configuration``, zero records.
* ``dim384_l2`` -- 50 records of 384 dims, space not declared at all (Chroma's default, l2).
* ``dim1536_ip`` -- 30 unit-length records of 1536 dims, ip declared via ``configuration``, canonical
  lowercase UUID ids.

Things chromadb 1.5.9 silently changes, hence left out: NaN/inf metadata values are dropped, an int of
2**63 or more comes back as a float, ``-0.0`` comes back as ``0.0``, a user key ``chroma:uri`` is dropped.
And a record with a uri but no metadata reads back with metadata ``{}`` instead of ``None``.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import numpy as np

AWKWARD_UUID = "123e4567-e89b-12d3-a456-426614174000"
#: The same UUID spelled five ways: distinct Chroma ids, so they must become five distinct points.
UUID_SPELLINGS = (
    AWKWARD_UUID,
    AWKWARD_UUID.upper(),
    AWKWARD_UUID.replace("-", ""),
    "{" + AWKWARD_UUID + "}",
    "urn:uuid:" + AWKWARD_UUID,
)
LONG_ID = ("long-id-" + "0123456789abcdef" * 125)[:2000]
#: Metadata keys that collide with the names of the payload's own fields.
SHADOW_KEYS = {
    "document": "not the document",
    "chroma_id": "not-the-id",
    "__id__": 42,
    "uri": "s3://not/the/uri",
    "metadata": "not the metadata",
}
LIST_METADATA: dict[str, Any] = {
    "strs": ["a", "b", "c"],
    "ints": [1, 2, 3],
    "floats": [1.0, 2.5, -0.25],
    "bools": [True, False, True],
    "single": ["only"],
    "unicode": ["日本", "🚀", "café"],
}
TYPED_METADATA: dict[str, Any] = {
    "as_int": 1,
    "as_float": 1.0,
    "as_bool": True,
    "big_int": 2**53 + 1,
    "negative": -5,
    "tiny": 1e-300,
    "empty_str": "",
    "clé": "valeur",
}

SEED = 20240601


def _awkward_cosine_records() -> list[dict[str, Any]]:
    """Records of ``awkward_cosine`` as dicts of id, embedding, document, metadata, uri."""
    rng = np.random.default_rng(SEED)

    def vec() -> list[float]:
        return [float(x) for x in rng.uniform(-1.0, 1.0, size=3).astype(np.float32)]

    records: list[dict[str, Any]] = []

    def add(
        record_id: str,
        *,
        embedding: list[float] | None = None,
        document: str | None = None,
        metadata: dict[str, Any] | None = None,
        uri: str | None = None,
    ) -> None:
        records.append(
            {
                "id": record_id,
                "embedding": embedding if embedding is not None else vec(),
                "document": document,
                "metadata": metadata,
                "uri": uri,
            }
        )

    for n, spelling in enumerate(UUID_SPELLINGS):
        add(
            spelling,
            document=f"The same UUID, spelling {n}: {spelling}",
            metadata={"variant": n},
            uri=f"s3://bucket/uuid-{n}.pdf" if n % 2 == 0 else None,
        )
    add("日本語-id", document="日本語のドキュメントです。", metadata={"言語": "日本語"}, uri="s3://bucket/日本語.pdf")
    add("émoji-🚀", document="Café ☕ on the Jakarta—Bali route 🚀", metadata={"tags": ["🚀", "café"]})
    add(LONG_ID, document="A record whose id is 2,000 characters long.", metadata={"id_length": 2000})
    one = vec()
    add("1", embedding=one, document="one as int", metadata={"value": 1})
    add("01", document="one as float", metadata={"value": 1.0})
    add("001", document="one as bool", metadata={"value": True})
    add("dup-of-1", embedding=list(one), document="same vector as record '1'", metadata={"value": "1"})
    add("shadow-keys", document="the real document", metadata=dict(SHADOW_KEYS), uri="s3://bucket/real.pdf")
    add("zero-vector", embedding=[0.0, 0.0, 0.0])
    add("no-document", metadata=dict(LIST_METADATA), uri="https://example.com/no-document")
    add("empty-document", document="", metadata={"note": "document is the empty string"})
    # chromadb 1.5.9 reads this record's metadata back as {} (not None): the uri lives in its metadata table.
    add("uri-no-metadata", document="a uri but no metadata", uri="s3://bucket/uri-only.pdf")
    add("lists", document="every list type", metadata=dict(LIST_METADATA))
    add("types", document="1, 1.0 and True under different keys", metadata=dict(TYPED_METADATA))
    add(" padded id ", document="id with spaces around it")
    add("path/with/slashes?and=query#frag", document="url-like id", uri="file:///tmp/a b/c.txt")
    add("tab\tand\nnewline", document="id with control characters", metadata={"ok": False})
    return records


def _clustered(rng: np.random.Generator, n: int, dim: int, *, clusters: int, normalize: bool) -> np.ndarray:
    centres = rng.standard_normal((clusters, dim)) / math.sqrt(dim)
    assign = rng.integers(0, clusters, size=n)
    vectors = centres[assign] + 0.3 * rng.standard_normal((n, dim)) / math.sqrt(dim)
    if normalize:
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    else:
        vectors *= 3.0
    return vectors.astype(np.float32)


def create_awkward_db(path: str | Path) -> dict[str, dict[str, Any]]:
    """Write the awkward ChromaDB at ``path`` (absent or empty) and describe it.

    Returns ``{collection: {"space", "dim", "ids", "count", "declared"}}``; ``dim`` is ``None`` for the
    empty collection. Deterministic.
    """
    import chromadb
    from chromadb.config import Settings

    target = Path(path)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} already exists and is not empty")
    target.mkdir(parents=True, exist_ok=True)

    description: dict[str, dict[str, Any]] = {}
    client = chromadb.PersistentClient(path=str(target), settings=Settings(anonymized_telemetry=False))
    try:
        # awkward_cosine: cosine via metadata
        records = _awkward_cosine_records()
        col = client.create_collection(
            "awkward_cosine", metadata={"hnsw:space": "cosine", "purpose": "awkward"}, embedding_function=None
        )
        col.add(
            ids=[r["id"] for r in records],
            embeddings=np.array([r["embedding"] for r in records], dtype=np.float32),
            documents=[r["document"] for r in records],
            metadatas=[r["metadata"] for r in records],
            uris=[r["uri"] for r in records],
        )
        ids = [r["id"] for r in records]
        description["awkward_cosine"] = {
            "space": "cosine",
            "dim": 3,
            "ids": ids,
            "count": len(ids),
            "declared": "metadata",
        }

        # empty_one: l2 via configuration, no records
        client.create_collection("empty_one", configuration={"hnsw": {"space": "l2"}}, embedding_function=None)
        description["empty_one"] = {"space": "l2", "dim": None, "ids": [], "count": 0, "declared": "configuration"}

        # dim384_l2: nothing declared -> Chroma's default l2
        rng = np.random.default_rng(SEED + 384)
        col = client.create_collection("dim384_l2", embedding_function=None)
        ids = [f"vec-{i:03d}" for i in range(50)]
        col.add(
            ids=ids,
            embeddings=_clustered(rng, 50, 384, clusters=5, normalize=False),
            documents=[None if i % 10 == 3 else f"Record {i} of the 384-dimensional collection." for i in range(50)],
            metadatas=[{"i": i, "even": i % 2 == 0, "ratio": i / 4} if i % 7 else None for i in range(50)],
            uris=[f"s3://bucket/dim384/{i}.txt" if i % 3 == 0 else None for i in range(50)],
        )
        description["dim384_l2"] = {"space": "l2", "dim": 384, "ids": ids, "count": 50, "declared": "default"}

        # dim1536_ip: ip via configuration, unit vectors, canonical uuid ids
        rng = np.random.default_rng(SEED + 1536)
        col = client.create_collection("dim1536_ip", configuration={"hnsw": {"space": "ip"}}, embedding_function=None)
        ids = [str(uuid.UUID(bytes=bytes(rng.integers(0, 256, size=16, dtype=np.uint8)), version=4)) for _ in range(30)]
        col.add(
            ids=ids,
            embeddings=_clustered(rng, 30, 1536, clusters=3, normalize=True),
            documents=[f"Unit-length record {i}." for i in range(30)],
            metadatas=[{"rank": i, "score": float(i % 4)} for i in range(30)],
        )
        description["dim1536_ip"] = {"space": "ip", "dim": 1536, "ids": ids, "count": 30, "declared": "configuration"}
    finally:
        client.close()
    return description

"""Qdrant Edge as a target: the Qdrant engine in-process (``qdrant-edge-py``), one shard per collection.

Edge runs the server's own segment, payload-index, filter and HNSW code, so what the runbook proves here holds on a
server. It has no collections and no aliases: collection ``name`` is the shard at ``<QDRANT_EDGE_PATH>/<name>/``,
and a step that needs aliases, shards or replicas is refused in one sentence. Data in and out are qdrant-client's
models, as for :class:`~runbook_lib.qdrant.target.QdrantTarget`.

Edge optimizes only when asked: points land in a plain (exact) segment, and :meth:`EdgeTarget.finish_bulk_load`
builds the HNSW index with ``optimize()``. Every shard gets that index however small it is, as Chroma does, so
an approximate search compares two HNSW indexes. A shard is held by one process at a time (Edge locks its
write-ahead log); a second opener is refused in one sentence. qdrant-edge-py 0.9 holds the GIL in ``update``,
``flush`` and ``optimize`` (searches release it), so other Python threads wait while a batch is written or the index
is built.
"""

from __future__ import annotations

import os
import threading
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from importlib import metadata
from types import EllipsisType
from typing import Any, TypeVar

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from runbook_lib.config.settings import QdrantSettings
from runbook_lib.errors import ConfigError, RunbookError, TargetError
from runbook_lib.qdrant.base import Capabilities, IndexType, TargetCollection, runbook_path, scroll_chroma_ids
from runbook_lib.qdrant.edge_filters import to_edge_filter
from runbook_lib.qdrant.edge_folders import (
    CONFIG_FILE,
    is_shard,
    read_config,
    remove_shard_folder,
    shard_folder,
    shard_names,
)

__all__ = ["ALIAS_REFUSAL", "EdgeTarget"]

T = TypeVar("T")

#: Why a step that needs aliases cannot run on Edge, and what to do instead.
ALIAS_REFUSAL = "Qdrant Edge has no aliases: use -p cutover plain, or a Qdrant server via QDRANT_URL."
#: Qdrant's defaults for what the collection's configuration does not say.
DEFAULT_HNSW = {"m": 16, "ef_construct": 100}
FULL_SCAN_THRESHOLD_KB = 10_000
#: A segment with more than this many kB of vectors gets an HNSW index when optimized: every shard worth one.
INDEXING_THRESHOLD_KB = 1

_DISTANCES = {"Cosine": qe.Distance.Cosine, "Euclid": qe.Distance.Euclid, "Dot": qe.Distance.Dot}
#: Edge's payload schema types by the names qdrant-client gives them (``models.PayloadSchemaType`` values).
_SCHEMA_TYPES: dict[str, Any] = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "integer": qe.PayloadSchemaType.Integer,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
    "geo": qe.PayloadSchemaType.Geo,
    "text": qe.PayloadSchemaType.Text,
    "datetime": qe.PayloadSchemaType.Datetime,
    "uuid": qe.PayloadSchemaType.Uuid,
}
_SCHEMA_NAMES = {edge_type: name for name, edge_type in _SCHEMA_TYPES.items()}


class EdgeTarget:
    """Collections as Qdrant Edge shards under ``settings.edge_path``. Use as a context manager; shards are opened
    on first use and held (locked) until :meth:`close`."""

    capabilities = Capabilities(kind="edge", aliases=False, cluster=False, engine=True, payload_indexes=True, hnsw=True)
    #: One copy of every point: reads are always consistent, so this changes nothing.
    strong_reads: bool = False

    def __init__(self, settings: QdrantSettings) -> None:
        if settings.edge_path is None:
            raise ConfigError("EdgeTarget needs QDRANT_EDGE_PATH: set it to the folder that holds the shards.")
        self.settings = settings
        self.root = settings.edge_path  # made by the first create_collection: reading never creates it
        self._shards: dict[str, qe.EdgeShard] = {}
        self._guard = threading.Lock()

    def __enter__(self) -> EdgeTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and close every open shard (all are closed even when one fails; the first failure is raised)."""
        with self._guard:
            shards, self._shards = self._shards, {}
        failed: TargetError | None = None
        for name, shard in shards.items():
            for what, call in (("flush", shard.flush), ("close", shard.close)):
                try:
                    call()
                except Exception as exc:
                    failed = failed or TargetError(
                        f"Qdrant Edge could not {what} collection {name!r} at {self.root}: {_short(exc)}",
                        collection=name,
                    )
        if failed is not None:
            raise failed

    def describe(self) -> str:
        return self.settings.describe()

    def identity(self) -> dict[str, Any]:
        return {"kind": "edge", "path": str(self.root), "qdrant_edge_version": metadata.version("qdrant-edge-py")}

    def ping(self) -> None:
        """The root (or, before the first collection, the folder it will be made in) is a writable directory."""
        there = self.root
        while not there.exists() and there != there.parent:
            there = there.parent
        if not there.is_dir() or not os.access(there, os.W_OK):
            raise TargetError(
                f"Qdrant Edge cannot use QDRANT_EDGE_PATH={self.root}: {there} is not a writable directory."
            )

    # --- collections and aliases ---------------------------------------------------------------
    def collection_names(self) -> list[str]:
        return shard_names(self.root)

    def aliases(self) -> dict[str, str]:
        return {}

    def exists(self, name: str) -> bool:
        return is_shard(shard_folder(self.root, name))

    def describe_collection(self, name: str) -> TargetCollection:
        config = read_config(self.root, name)
        vectors = config.get("vectors") or {}
        if set(vectors) != {""}:
            raise TargetError(
                f"Qdrant Edge collection {name!r} uses named vectors; the runbook writes one unnamed vector per "
                "point: choose another target name or remove that collection.",
                collection=name,
            )
        return TargetCollection(
            name=name, size=int(vectors[""]["size"]), distance=str(vectors[""]["distance"]), points=self.count(name)
        )

    def create_collection(
        self,
        name: str,
        *,
        size: int,
        distance: str,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        defer_indexing: bool = True,
        hnsw: dict[str, int] | None = None,
    ) -> int | None:
        """Create the shard with the vector size, distance and HNSW parameters (kept across loads). Edge indexes
        only in :meth:`finish_bulk_load`, so indexing is always deferred and nothing is to be restored: None."""
        cluster = {
            "shard_number": shard_number,
            "replication_factor": replication_factor,
            "write_consistency_factor": write_consistency_factor,
        }
        asked = [f"{k}={v}" for k, v in cluster.items() if v is not None]
        if asked:
            raise ConfigError(
                f"Qdrant Edge has no shards or replicas ({', '.join(asked)}): leave those parameters unset, or use "
                "a Qdrant server via QDRANT_URL."
            )
        try:
            qe_distance = _DISTANCES[distance]
        except KeyError:
            raise ConfigError(f"Unknown Qdrant distance {distance!r}: expected Cosine, Euclid or Dot.") from None
        unknown = sorted(set(hnsw or {}) - set(DEFAULT_HNSW))
        if unknown:
            raise ConfigError(f"Unknown HNSW parameters {unknown} for {name!r}: Qdrant Edge takes m and ef_construct.")
        graph = {**DEFAULT_HNSW, **(hnsw or {})}
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=size, distance=qe_distance, datatype=qe.VectorStorageDatatype.Float32),
            hnsw_config=qe.HnswIndexConfig(
                m=graph["m"], ef_construct=graph["ef_construct"], full_scan_threshold=FULL_SCAN_THRESHOLD_KB
            ),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=INDEXING_THRESHOLD_KB),
        )
        folder = shard_folder(self.root, name)
        with self._guard:
            if is_shard(folder):
                raise TargetError(f"Qdrant Edge collection {name!r} already exists at {folder}.", collection=name)
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"Cannot create the Qdrant Edge folder QDRANT_EDGE_PATH={self.root} ({exc.strerror}): point "
                    "QDRANT_EDGE_PATH at a directory you can write."
                ) from exc
            self._shards[name] = self._edge(name, "create the shard", lambda: qe.EdgeShard.create(str(folder), config))
        return None

    def indexing_threshold(self, name: str) -> int | None:
        """The shard's indexing threshold (kB) from its configuration (None: not stated)."""
        value = (read_config(self.root, name).get("optimizers") or {}).get("indexing_threshold")
        return int(value) if value is not None else None

    def finish_bulk_load(
        self, name: str, *, restore_to: int | EllipsisType | None = ..., progress: Callable[[str], None] | None = None
    ) -> int | None:
        """Build the HNSW index (``optimize()``, blocking) so the collection is searchable as a server's optimizer
        leaves it; ``progress`` hears when it starts and ends. ``restore_to`` is a server's concern. Returns None."""
        shard = self._shard(name)
        say = progress or (lambda message: None)
        say(f"building the HNSW index of {name!r} ({self._edge(name, 'count points', shard.info).points_count} points)")
        started = time.monotonic()
        self._edge(name, "build the HNSW index", shard.optimize)
        self._edge(name, "flush the HNSW index", shard.flush)
        indexed = self._edge(name, "read the shard information", shard.info).indexed_vectors_count
        say(f"HNSW index of {name!r} built: {indexed} vectors indexed in {time.monotonic() - started:.1f} s")
        return None

    def bulk_writes(self, name: str) -> AbstractContextManager[Callable[[], None]]:
        """Yields ``flush``: after it returns, every batch written so far is on disk (also flushed on exit)."""
        return self._bulk_writes(name)

    @contextmanager
    def _bulk_writes(self, name: str) -> Iterator[Callable[[], None]]:
        shard = self._shard(name)

        def flush() -> None:
            self._edge(name, "flush", shard.flush)

        yield flush
        flush()

    def delete_collection(self, name: str) -> None:
        """Close the shard and remove its folder. Nothing to do when there is no such shard; a folder that is not
        a shard is kept."""
        folder = shard_folder(self.root, name)
        if not folder.exists():
            return
        if not is_shard(folder):
            raise TargetError(
                f"{folder} is not a Qdrant Edge shard (it has no {CONFIG_FILE}), so it is not removed: move it out "
                "of QDRANT_EDGE_PATH if it is not needed.",
                collection=name,
            )
        shard = self._shard(name)  # holding it proves no other process has it open
        with self._guard:
            self._shards.pop(name, None)
        shard.close()
        remove_shard_folder(self.root, name)

    def set_alias(self, alias: str, collection: str) -> None:
        raise ConfigError(ALIAS_REFUSAL)

    def delete_alias(self, alias: str) -> None:
        raise ConfigError(ALIAS_REFUSAL)

    # --- payload indexes -----------------------------------------------------------------------
    def create_payload_index(self, name: str, field: str, index_type: IndexType) -> None:
        """A payload index on ``field``; ``text`` is a word-tokenized index that keeps case (Chroma's matching
        is case-sensitive)."""
        if index_type == "text":
            schema: Any = qe.TextIndexParams(tokenizer=qe.TokenizerType.Word, lowercase=False)
        elif index_type in ("keyword", "integer", "float", "bool"):
            schema = _SCHEMA_TYPES[index_type]
        else:
            raise ConfigError(
                f"Unknown payload index type {index_type!r} for {field!r}: expected keyword, integer, float, bool "
                "or text."
            )
        shard = self._shard(name)
        operation = qe.UpdateOperation.create_field_index(field, schema)
        self._edge(name, f"create a {index_type} index on {field!r}", lambda: shard.update(operation))

    def payload_indexes(self, name: str) -> dict[str, str]:
        schema = self._edge(name, "read the payload indexes", self._shard(name).info).payload_schema
        return {runbook_path(field): _SCHEMA_NAMES[info.data_type] for field, info in schema.items()}

    def strict_mode(self, name: str) -> models.StrictModeConfigOutput | None:
        """None: Qdrant Edge has no strict mode (nothing is refused for want of an index)."""
        return None

    # --- points --------------------------------------------------------------------------------
    def count(self, name: str, query_filter: models.Filter | None = None) -> int:
        request = qe.CountRequest(exact=True, filter=to_edge_filter(query_filter))
        shard = self._shard(name)
        return int(self._edge(name, "count points", lambda: shard.count(request)))

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray | Sequence[Sequence[float]],
        payloads: Sequence[dict[str, Any]],
        *,
        batch_label: str = "",
    ) -> None:
        """Upsert one batch; it is applied when this returns (durable after ``flush``)."""
        shard = self._shard(name)
        try:
            if not len(ids) == len(vectors) == len(payloads):
                raise ValueError(f"{len(ids)} ids, {len(vectors)} vectors and {len(payloads)} payloads")
            rows = _vector_rows(vectors)
            points = [qe.Point(id=i, vector=v, payload=p) for i, v, p in zip(ids, rows, payloads, strict=True)]
            shard.update(qe.UpdateOperation.upsert_points(points))
        except Exception as exc:
            raise TargetError(
                f"Qdrant Edge refused {batch_label or 'a batch'} of collection {name!r} "
                f"({len(ids)} points, first id {ids[0] if len(ids) else None!r}): {_short(exc)}",
                collection=name,
                batch=batch_label,
            ) from exc

    def overwrite_payloads(self, name: str, payloads: dict[str, dict[str, Any]]) -> None:
        shard = self._shard(name)
        for point, payload in payloads.items():
            operation = qe.UpdateOperation.overwrite_payload([point], payload)
            self._edge(name, f"overwrite the payload of point {point}", lambda op=operation: shard.update(op))

    def delete_points(
        self, name: str, ids: Sequence[str] | None = None, query_filter: models.Filter | None = None
    ) -> None:
        if ids is None and query_filter is None:
            raise ValueError("delete_points needs ids, a filter, or both")
        if ids is not None and not ids:
            return
        if query_filter is None:
            operation = qe.UpdateOperation.delete_points(list(ids or []))
        else:
            selected = models.Filter(must=[models.HasIdCondition(has_id=list(ids)), query_filter]) if ids else None
            edge_filter = to_edge_filter(selected or query_filter)
            operation = qe.UpdateOperation.delete_points_by_filter(edge_filter)
        shard = self._shard(name)
        self._edge(name, "delete points", lambda: shard.update(operation))

    def scroll(
        self,
        name: str,
        *,
        limit: int,
        offset: Any = None,
        with_vectors: bool = True,
        with_payload: bool | Sequence[str] = True,
        query_filter: models.Filter | None = None,
    ) -> tuple[list[models.Record], Any]:
        request = qe.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=to_edge_filter(query_filter),
            with_payload=_payload_selector(with_payload),
            with_vector=with_vectors,
        )
        shard = self._shard(name)
        records, next_offset = self._edge(name, "read points", lambda: shard.scroll(request))
        return [_record(r) for r in records], None if next_offset is None else str(next_offset)

    def retrieve(
        self, name: str, ids: Sequence[str], *, with_vectors: bool = True, with_payload: bool | Sequence[str] = True
    ) -> list[models.Record]:
        shard = self._shard(name)
        selector = _payload_selector(with_payload)
        found = self._edge(name, "retrieve points", lambda: shard.retrieve(list(ids), selector, with_vectors))
        return [_record(r) for r in found]

    def iter_chroma_ids(self, name: str, *, page: int) -> Iterator[tuple[str, Any]]:
        return scroll_chroma_ids(self, name, page=page)

    def query(
        self,
        name: str,
        vector: Sequence[float],
        *,
        limit: int,
        exact: bool = False,
        query_filter: models.Filter | None = None,
        with_payload: bool = True,
        with_vectors: bool = False,
        retry: bool = True,
    ) -> list[models.ScoredPoint]:
        """Nearest neighbours: a full scan when ``exact``, else the HNSW index where a segment has one. Nothing
        in-process is transient, so ``retry`` changes nothing."""
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(list(vector)),
            filter=to_edge_filter(query_filter),
            with_payload=with_payload,
            with_vector=with_vectors,
            params=qe.SearchParams(exact=exact),
        )
        shard = self._shard(name)
        hits = self._edge(name, "search", lambda: shard.query(request))
        return [
            models.ScoredPoint(id=str(h.id), version=h.version, score=h.score, payload=h.payload, vector=h.vector)
            for h in hits
        ]

    # --- helpers -------------------------------------------------------------------------------
    def _shard(self, name: str) -> qe.EdgeShard:
        """The open shard of collection ``name``, loaded on first use."""
        with self._guard:
            shard = self._shards.get(name)
            if shard is None:
                folder = shard_folder(self.root, name)
                if not is_shard(folder):
                    raise TargetError(
                        f"Qdrant Edge has no collection {name!r} (no shard at {folder}).", collection=name
                    )
                shard = self._shards[name] = self._edge(name, "open the shard", lambda: qe.EdgeShard.load(str(folder)))
            return shard

    def _edge(self, name: str, what: str, call: Callable[[], T]) -> T:
        """``call()``, its failure as one sentence naming the collection (a shard held elsewhere: ConfigError)."""
        try:
            return call()
        except RunbookError:
            raise
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise ConfigError(
                    f"The Qdrant Edge shard of collection {name!r} ({self.root / name}) is open in another process "
                    "(a shard has one user at a time): close the other notebook, kernel or app using "
                    "QDRANT_EDGE_PATH, then retry."
                ) from exc
            raise TargetError(
                f"Qdrant Edge could not {what} (collection {name!r} at {self.root}): {_short(exc)}", collection=name
            ) from exc


def _vector_rows(vectors: np.ndarray | Sequence[Sequence[float]]) -> Sequence[Any]:
    """Rows qdrant-edge reads fast: ``array.array('f')`` per row of an array (exact float32; a numpy row is read
    element by element as numpy scalars, ~6x slower), lists as given."""
    if not isinstance(vectors, np.ndarray):
        return vectors
    rows = np.ascontiguousarray(vectors, dtype=np.float32)
    return [array("f", row.tobytes()) for row in rows]


def _payload_selector(with_payload: bool | Sequence[str]) -> bool | list[str]:
    return with_payload if isinstance(with_payload, bool) else list(with_payload)


def _record(r: qe.Record) -> models.Record:
    return models.Record(id=str(r.id), payload=r.payload, vector=r.vector)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:400]

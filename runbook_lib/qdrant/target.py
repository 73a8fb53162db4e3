"""The Qdrant target: embedded local mode (``QDRANT_PATH``) or a server (``QDRANT_URL`` + ``QDRANT_API_KEY``).

Everything the runbook does to Qdrant goes through :class:`QdrantTarget`, so retries, error
messages and the local/server differences live here. Local mode and a server share qdrant-client's
API; server-only features (deferred indexing, sharding, replication) are no-ops in local mode.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import EllipsisType
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from runbook_lib.config.settings import QdrantSettings
from runbook_lib.core.mapping import PAYLOAD_ID_KEY
from runbook_lib.errors import ConfigError, TargetError
from runbook_lib.qdrant import local_storage, rest_body
from runbook_lib.qdrant.retries import is_transient, retry_transient

__all__ = ["QdrantTarget", "TargetCollection", "connect", "indexing_to_restore", "is_transient", "retry_transient"]

log = logging.getLogger(__name__)

#: Qdrant's documented default indexing threshold (kB): restored only when a new collection's own configuration
#: does not say which threshold it has (its own value is what is restored otherwise).
DEFAULT_INDEXING_THRESHOLD = 20_000


def indexing_to_restore(*, deferred_from: int | None, current: int | None) -> int | None:
    """The ``indexing_threshold`` to set after a bulk load, or None to leave the collection as it is.

    ``deferred_from`` is the collection's own threshold, read when this run created it and switched indexing off
    (None: the run did not defer it -- it did not create the collection, or local mode -- so it is never touched);
    ``current`` is its threshold now (anything but 0: someone set it meanwhile, which is kept)."""
    if deferred_from is None or current != 0:
        return None
    return deferred_from


_DISTANCES = {
    "Cosine": models.Distance.COSINE,
    "Euclid": models.Distance.EUCLID,
    "Dot": models.Distance.DOT,
}


@dataclass(frozen=True)
class TargetCollection:
    name: str
    size: int
    distance: str  # "Cosine" | "Euclid" | "Dot"
    points: int


class QdrantTarget:
    """A connection to the Qdrant target. Use as a context manager; local mode locks its directory."""

    #: Reads (scroll, retrieve, query) ask every replica (``consistency=all``) when True: what verify uses, so a
    #: replicated cluster cannot answer from a replica that has not applied every write yet.
    strong_reads: bool = False

    def __init__(self, settings: QdrantSettings) -> None:
        self.settings = settings
        self.client = connect(settings)
        self.is_local = not settings.is_server
        #: collection -> its own indexing_threshold, for the collections this target created with indexing deferred
        self._deferred: dict[str, int] = {}

    def __enter__(self) -> QdrantTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # pragma: no cover - closing never hides the real error
            log.debug("closing the Qdrant client failed", exc_info=True)

    def describe(self) -> str:
        return self.settings.describe()

    # --- collections and aliases ---------------------------------------------------------------
    def collection_names(self) -> list[str]:
        return sorted(c.name for c in self.client.get_collections().collections)

    def aliases(self) -> dict[str, str]:
        """alias name -> collection name."""
        return {a.alias_name: a.collection_name for a in self.client.get_aliases().aliases}

    def exists(self, name: str) -> bool:
        """True when a collection or an alias of that name exists."""
        return bool(self.client.collection_exists(name))

    def describe_collection(self, name: str) -> TargetCollection:
        info = self.client.get_collection(name)
        params = info.config.params.vectors
        if not isinstance(params, models.VectorParams):
            raise TargetError(
                f"Qdrant collection {name!r} uses named vectors; the runbook writes one unnamed vector per "
                "point: choose another target name or remove that collection."
            )
        return TargetCollection(
            name=name,
            size=int(params.size),
            distance=params.distance.value if hasattr(params.distance, "value") else str(params.distance),
            points=self.count(name),
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
    ) -> int | None:
        """Create a collection for one unnamed float32 vector per point.

        On a server, ``defer_indexing`` switches HNSW indexing off (``indexing_threshold=0``) so the bulk load does
        not build the graph segment by segment: the collection's own threshold is read from its configuration first
        and returned -- keep it (the migration checkpoint) and hand it to :meth:`finish_bulk_load`, which restores
        it. None: indexing was not deferred (local mode, or ``defer_indexing`` off).
        """
        try:
            qd_distance = _DISTANCES[distance]
        except KeyError:
            raise ConfigError(f"Unknown Qdrant distance {distance!r}: expected Cosine, Euclid or Dot.") from None
        kwargs: dict[str, Any] = {}
        if not self.is_local:
            kwargs.update(
                shard_number=shard_number,
                replication_factor=replication_factor,
                write_consistency_factor=write_consistency_factor,
            )
        self._call(
            f"create collection {name!r}",
            self.client.create_collection,
            collection_name=name,
            vectors_config=models.VectorParams(size=size, distance=qd_distance, datatype=models.Datatype.FLOAT32),
            **kwargs,
        )
        if self.is_local or not defer_indexing:
            return None
        own = self.indexing_threshold(name)
        previous = own if own is not None else DEFAULT_INDEXING_THRESHOLD
        self._set_indexing_threshold(name, 0, f"defer indexing of {name!r}")
        self._deferred[name] = previous
        return previous

    def indexing_threshold(self, name: str) -> int | None:
        """The collection's ``indexing_threshold`` (kB) from its configuration (None: not stated)."""
        info = self._call(f"read the configuration of {name!r}", self.client.get_collection, collection_name=name)
        optimizer = getattr(info.config, "optimizer_config", None)
        value = getattr(optimizer, "indexing_threshold", None)
        return int(value) if value is not None else None

    def _set_indexing_threshold(self, name: str, value: int, what: str) -> None:
        self._call(
            what,
            self.client.update_collection,
            collection_name=name,
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=value),
        )

    def finish_bulk_load(self, name: str, *, restore_to: int | EllipsisType | None = ...) -> int | None:
        """Restore indexing after a bulk load (server only): the threshold :meth:`create_collection` returned,
        passed as ``restore_to`` (a resumed run reads it from its checkpoint), else the one this target noted when it
        created the collection. A collection the run did not create is never touched, nor one whose threshold
        someone changed meanwhile. Returns the threshold set, or None."""
        if self.is_local:
            return None
        deferred_from = self._deferred.get(name) if restore_to is ... else restore_to
        if not isinstance(deferred_from, int):
            return None
        value = indexing_to_restore(deferred_from=deferred_from, current=self.indexing_threshold(name))
        self._deferred.pop(name, None)
        if value is None:
            return None
        self._set_indexing_threshold(name, value, f"restore indexing of {name!r}")
        return value

    def bulk_writes(self, name: str) -> AbstractContextManager[Callable[[], None]]:
        """Batch-durable writes for a bulk load (local mode: see :mod:`runbook_lib.qdrant.local_storage`); yields
        ``flush``, to call before recording a batch as written. A server's writes are durable when acknowledged."""
        return local_storage.bulk_writes(self.client, name) if self.is_local else nullcontext(_no_flush)

    def delete_collection(self, name: str) -> None:
        self._call(f"delete collection {name!r}", self.client.delete_collection, collection_name=name)

    def set_alias(self, alias: str, collection: str) -> None:
        """Point ``alias`` at ``collection`` atomically (delete + create in one request)."""
        ops: list[Any] = []
        if alias in self.aliases():
            ops.append(models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias)))
        ops.append(
            models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=collection, alias_name=alias))
        )
        self._call(
            f"point alias {alias!r} at {collection!r}",
            self.client.update_collection_aliases,
            change_aliases_operations=ops,
        )

    def delete_alias(self, alias: str) -> None:
        op = models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=alias))
        self._call(f"delete alias {alias!r}", self.client.update_collection_aliases, change_aliases_operations=[op])

    # --- points --------------------------------------------------------------------------------
    def count(self, name: str) -> int:
        return int(self._call(f"count {name!r}", self.client.count, collection_name=name, exact=True).count)

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray | Sequence[Sequence[float]],
        payloads: Sequence[dict[str, Any]],
        *,
        batch_label: str = "",
    ) -> None:
        """Upsert one batch and wait for it to be applied. Transient errors are retried with backoff;
        a permanent error raises :class:`TargetError` naming the collection and the batch."""
        body = (
            None if self.is_local or self.settings.prefer_grpc else rest_body.points_batch_json(ids, vectors, payloads)
        )
        rows = vectors.tolist() if body is None and isinstance(vectors, np.ndarray) else vectors
        try:
            _upsert_with_retry(self.client, name, list(ids), rows, list(payloads), body)
        except Exception as exc:
            raise TargetError(
                f"Qdrant refused {batch_label or 'a batch'} of collection {name!r} "
                f"({len(ids)} points, first id {ids[0] if ids else None!r}): {_short(exc)}",
                collection=name,
                batch=batch_label,
            ) from exc

    def scroll(
        self, name: str, *, limit: int, offset: Any = None, with_vectors: bool = True
    ) -> tuple[list[models.Record], Any]:
        return self._call(
            f"read points of {name!r}",
            self.client.scroll,
            collection_name=name,
            limit=limit,
            **self._read_consistency(),
            offset=offset,
            with_payload=True,
            with_vectors=with_vectors,
        )

    def retrieve(self, name: str, ids: Sequence[str], *, with_vectors: bool = True) -> list[models.Record]:
        return self._call(
            f"retrieve points of {name!r}",
            self.client.retrieve,
            collection_name=name,
            ids=list(ids),
            **self._read_consistency(),
            with_payload=True,
            with_vectors=with_vectors,
        )

    def iter_chroma_ids(self, name: str, *, page: int) -> Iterator[tuple[str, Any]]:
        """(point id, payload ``chroma_id`` or None) for every point, ``page`` points per request.

        Reads only the ``chroma_id`` payload key and no vectors. Each page is retried on transient errors;
        any other error propagates as qdrant-client raised it.
        """
        offset: Any = None
        selector = models.PayloadSelectorInclude(include=[PAYLOAD_ID_KEY])
        scroll = retry_transient(self.client.scroll)
        while True:
            points, offset = scroll(
                collection_name=name,
                limit=page,
                offset=offset,
                with_payload=selector,
                with_vectors=False,
                **self._read_consistency(),
            )
            for p in points:
                yield str(p.id), (p.payload or {}).get(PAYLOAD_ID_KEY)
            if offset is None:
                return

    def query(
        self,
        name: str,
        vector: Sequence[float],
        *,
        limit: int,
        exact: bool = False,
        query_filter: models.Filter | None = None,
        with_payload: bool = True,
    ) -> list[models.ScoredPoint]:
        """Nearest neighbours (``query_points``). ``exact`` asks a server for a full scan; local mode
        always scans exactly."""
        params = None if self.is_local else models.SearchParams(exact=exact)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            response = self._call(
                f"query {name!r}",
                self.client.query_points,
                collection_name=name,
                query=list(vector),
                limit=limit,
                search_params=params,
                query_filter=query_filter,
                with_payload=with_payload,
                **self._read_consistency(),
            )
        return list(response.points)

    # --- helpers -------------------------------------------------------------------------------
    def _read_consistency(self) -> dict[str, Any]:
        """``consistency=all`` for a server when :attr:`strong_reads` is set (local mode has one copy)."""
        if self.strong_reads and not self.is_local:
            return {"consistency": models.ReadConsistencyType.ALL}
        return {}

    def _call(self, what: str, fn: Any, /, **kwargs: Any) -> Any:
        try:
            return retry_transient(fn)(**kwargs)
        except Exception as exc:
            raise TargetError(f"Qdrant could not {what} at {self.describe()}: {_short(exc)}") from exc


@retry_transient
def _upsert_with_retry(
    client: QdrantClient,
    name: str,
    ids: list[str],
    vectors: Any,
    payloads: list[dict[str, Any]],
    body: bytes | None = None,
) -> None:
    if body is not None:  # encoded once, outside the retries (see runbook_lib.qdrant.rest_body)
        client.http.points_api.upsert_points(collection_name=name, wait=True, point_insert_operations=body)  # type: ignore[arg-type]
        return
    client.upsert(collection_name=name, points=models.Batch(ids=ids, vectors=vectors, payloads=payloads), wait=True)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:400]


def _no_flush() -> None:
    return None


def connect(settings: QdrantSettings) -> QdrantClient:
    """Open qdrant-client for the settings; one clear :class:`ConfigError` when that is impossible."""
    if settings.is_server:
        try:
            client = QdrantClient(
                url=settings.url,
                api_key=settings.api_key.get_secret_value() if settings.api_key else None,
                prefer_grpc=settings.prefer_grpc,
                timeout=math.ceil(settings.timeout_s),  # whole seconds, rounded up: 0.5 s is 1 s, never 0
                check_compatibility=False,
            )
            client.get_collections()
        except Exception as exc:
            raise ConfigError(
                f"Cannot reach the Qdrant server at {settings.url} ({_short(exc)}): check QDRANT_URL and "
                "QDRANT_API_KEY, and that the server is running."
            ) from exc
        return client
    try:
        settings.path.mkdir(parents=True, exist_ok=True)
        return QdrantClient(path=str(settings.path))
    except Exception as exc:
        if "already accessed by another instance" in str(exc) or "lock" in str(exc).lower():
            raise ConfigError(
                f"QDRANT_PATH {settings.path} is open in another process (qdrant-client's local mode allows "
                "one at a time): close the other notebook or kernel, or use a Qdrant server via QDRANT_URL."
            ) from exc
        raise ConfigError(f"Cannot open Qdrant local storage at QDRANT_PATH={settings.path}: {_short(exc)}") from exc

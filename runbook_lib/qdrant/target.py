"""The Qdrant-side interface over qdrant-client: a server (``QDRANT_URL`` + ``QDRANT_API_KEY``, also Qdrant Cloud and
clusters) or qdrant-client's embedded local mode (``QDRANT_PATH``).

Both speak qdrant-client's public API; what local mode lacks (deferred indexing, sharding, replication, payload
indexes, approximate search) is stated in :attr:`QdrantTarget.capabilities` and skipped here, so callers branch on a
capability, never on the kind of target.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from importlib import metadata as importlib_metadata
from types import EllipsisType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from qdrant_client import QdrantClient, models

from runbook_lib.config.settings import QdrantSettings
from runbook_lib.errors import ConfigError, TargetError
from runbook_lib.qdrant.base import Capabilities, IndexType, TargetCollection, runbook_path, scroll_chroma_ids
from runbook_lib.qdrant.retries import retry_briefly, retry_transient

__all__ = ["QdrantTarget", "TargetCollection", "indexing_to_restore"]

log = logging.getLogger(__name__)

#: Qdrant's documented default indexing threshold (kB): restored only when a new collection's own configuration
#: does not say which threshold it has (its own value is what is restored otherwise).
DEFAULT_INDEXING_THRESHOLD = 20_000

SERVER_CAPABILITIES = Capabilities(
    kind="server", aliases=True, cluster=True, engine=True, payload_indexes=True, hnsw=True, concurrent_writes=True
)
LOCAL_CAPABILITIES = Capabilities(
    kind="local", aliases=True, cluster=False, engine=False, payload_indexes=False, hnsw=False
)


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

#: The payload index each :data:`~runbook_lib.qdrant.base.IndexType` creates. The text index splits words and keeps
#: their case, so a match is case-sensitive as Chroma's ``$contains`` is.
_INDEX_SCHEMAS: dict[str, models.PayloadSchemaType | models.TextIndexParams] = {
    "keyword": models.PayloadSchemaType.KEYWORD,
    "integer": models.PayloadSchemaType.INTEGER,
    "float": models.PayloadSchemaType.FLOAT,
    "bool": models.PayloadSchemaType.BOOL,
    "text": models.TextIndexParams(
        type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WORD, lowercase=False
    ),
}


class QdrantTarget:
    """:class:`~runbook_lib.qdrant.base.QdrantStore` over qdrant-client. Use as a context manager; local mode locks
    its directory until :meth:`close`. ``fail_fast``: retry transient errors briefly (an app's calls)."""

    strong_reads: bool = False

    def __init__(self, settings: QdrantSettings, *, fail_fast: bool = False) -> None:
        self.settings = settings
        self._retry = retry_briefly if fail_fast else retry_transient
        self.client = _connect(settings)
        self.capabilities = SERVER_CAPABILITIES if settings.is_server else LOCAL_CAPABILITIES
        #: collection -> its own indexing_threshold, for the collections this target created with indexing deferred
        self._deferred: dict[str, int] = {}
        self._server_version: str | None = None

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

    def identity(self) -> dict[str, Any]:
        client_version = _package_version("qdrant-client")
        if not self.settings.is_server:
            return {"kind": "local", "path": str(self.settings.path), "client_version": client_version}
        if self._server_version is None:
            try:
                self._server_version = str(self._retry(self.client.info)().version)
            except Exception as exc:
                log.warning("the Qdrant server at %s did not say its version: %s", self._url(), _short(exc))
        return {
            "kind": "server",
            "url": self._url(),
            "server_version": self._server_version,
            "client_version": client_version,
            "transport": "gRPC" if self.settings.prefer_grpc else "REST",
        }

    def ping(self) -> None:
        self._call("list collections", self.client.get_collections, retry=False)

    # --- collections and aliases ---------------------------------------------------------------
    def collection_names(self) -> list[str]:
        listing = self._call("list collections", self.client.get_collections)
        return sorted(c.name for c in listing.collections)

    def aliases(self) -> dict[str, str]:
        listing = self._call("list aliases", self.client.get_aliases)
        return {a.alias_name: a.collection_name for a in listing.aliases}

    def exists(self, name: str) -> bool:
        return bool(self._call(f"look up {name!r}", self.client.collection_exists, collection_name=name))

    def describe_collection(self, name: str) -> TargetCollection:
        info = self._call(f"describe collection {name!r}", self.client.get_collection, collection_name=name)
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
        hnsw: dict[str, int] | None = None,
    ) -> int | None:
        """Create a collection for one unnamed float32 vector per point.

        On a server, ``defer_indexing`` switches HNSW indexing off (``indexing_threshold=0``) so the bulk load does
        not build the graph segment by segment: the collection's own threshold is read from its configuration first
        and returned -- keep it (the migration checkpoint) and hand it to :meth:`finish_bulk_load`, which restores
        it. None: indexing was not deferred (local mode, or ``defer_indexing`` off). Local mode has no shards,
        replicas or HNSW index, so those arguments are not sent to it.
        """
        try:
            qd_distance = _DISTANCES[distance]
        except KeyError:
            raise ConfigError(f"Unknown Qdrant distance {distance!r}: expected Cosine, Euclid or Dot.") from None
        kwargs: dict[str, Any] = {}
        if self.capabilities.cluster:
            kwargs.update(
                shard_number=shard_number,
                replication_factor=replication_factor,
                write_consistency_factor=write_consistency_factor,
            )
        if self.capabilities.hnsw and hnsw:
            kwargs["hnsw_config"] = _hnsw_config(hnsw)
        self._call(
            f"create collection {name!r}",
            self.client.create_collection,
            collection_name=name,
            vectors_config=models.VectorParams(size=size, distance=qd_distance, datatype=models.Datatype.FLOAT32),
            **kwargs,
        )
        if not self.capabilities.hnsw or not defer_indexing:
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

    def finish_bulk_load(
        self, name: str, *, restore_to: int | EllipsisType | None = ..., progress: Callable[[str], None] | None = None
    ) -> int | None:
        """Restore indexing after a bulk load (server only): the threshold :meth:`create_collection` returned,
        passed as ``restore_to`` (a resumed run reads it from its checkpoint), else the one this target noted when it
        created the collection. A collection the run did not create is never touched, nor one whose threshold
        someone changed meanwhile. Returns the threshold set, or None; ``progress`` hears what was done."""
        if not self.capabilities.hnsw:
            return None
        deferred_from = self._deferred.get(name) if restore_to is ... else restore_to
        if not isinstance(deferred_from, int):
            return None
        value = indexing_to_restore(deferred_from=deferred_from, current=self.indexing_threshold(name))
        self._deferred.pop(name, None)
        if value is None:
            return None
        self._set_indexing_threshold(name, value, f"restore indexing of {name!r}")
        if progress is not None:
            progress(f"indexing of {name!r} restored (threshold {value} kB): the server builds its HNSW index now")
        return value

    def bulk_writes(self, name: str) -> AbstractContextManager[Callable[[], None]]:
        """Yields a ``flush`` with nothing to do: a server's writes are durable once acknowledged, and local mode
        stores each upsert before it returns."""
        return nullcontext(_no_flush)

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

    # --- payload indexes -----------------------------------------------------------------------
    def create_payload_index(self, name: str, field: str, index_type: IndexType) -> None:
        """Index one payload field (a server; local mode ignores payload indexes, so nothing is sent to it)."""
        try:
            schema = _INDEX_SCHEMAS[index_type]
        except KeyError:
            raise ConfigError(
                f"Unknown payload index type {index_type!r} for {field!r}: expected one of {', '.join(_INDEX_SCHEMAS)}."
            ) from None
        if not self.capabilities.payload_indexes:
            return
        self._call(
            f"index {field!r} of {name!r}",
            self.client.create_payload_index,
            collection_name=name,
            field_name=field,
            field_schema=schema,
            wait=True,
        )

    def payload_indexes(self, name: str) -> dict[str, str] | None:
        if not self.capabilities.payload_indexes:
            return None
        info = self._call(f"read the payload indexes of {name!r}", self.client.get_collection, collection_name=name)
        schema = info.payload_schema or {}
        return {runbook_path(field): _enum_value(index.data_type) for field, index in schema.items()}

    def strict_mode(self, name: str) -> models.StrictModeConfigOutput | None:
        """``get_collection(name).config.strict_mode_config``: a server's settings (local mode keeps none: None)."""
        info = self._call(f"read the strict mode of {name!r}", self.client.get_collection, collection_name=name)
        return getattr(info.config, "strict_mode_config", None)

    # --- points --------------------------------------------------------------------------------
    def count(self, name: str, query_filter: models.Filter | None = None) -> int:
        found = self._call(
            f"count {name!r}", self.client.count, collection_name=name, count_filter=query_filter, exact=True
        )
        return int(found.count)

    def upsert(
        self,
        name: str,
        ids: Sequence[str],
        vectors: np.ndarray | Sequence[Sequence[float]],
        payloads: Sequence[dict[str, Any]],
        *,
        batch_label: str = "",
    ) -> None:
        """Upsert one batch (``models.Batch``: REST or gRPC as the settings prefer) and wait for it to be applied.
        Transient errors are retried with backoff; a permanent error raises :class:`TargetError` naming the
        collection and the batch."""
        rows = vectors.tolist() if isinstance(vectors, np.ndarray) else [list(v) for v in vectors]
        batch = models.Batch(ids=list(ids), vectors=rows, payloads=list(payloads))
        try:
            self._retry(self.client.upsert)(collection_name=name, points=batch, wait=True)
        except Exception as exc:
            raise TargetError(
                f"Qdrant refused {batch_label or 'a batch'} of collection {name!r} "
                f"({len(ids)} points, first id {ids[0] if ids else None!r}): {_short(exc)}",
                collection=name,
                batch=batch_label,
            ) from exc

    def overwrite_payloads(self, name: str, payloads: dict[str, dict[str, Any]]) -> None:
        if not payloads:
            return
        operations = [
            models.OverwritePayloadOperation(overwrite_payload=models.SetPayload(payload=payload, points=[pid]))
            for pid, payload in payloads.items()
        ]
        self._call(
            f"overwrite payloads of {name!r}",
            self.client.batch_update_points,
            collection_name=name,
            update_operations=operations,
            wait=True,
        )

    def delete_points(
        self, name: str, ids: Sequence[str] | None = None, query_filter: models.Filter | None = None
    ) -> None:
        selector: models.PointIdsList | models.FilterSelector
        if query_filter is not None:
            conditions: list[models.Condition] = [query_filter]
            if ids is not None:
                conditions.insert(0, models.HasIdCondition(has_id=list(ids)))
            selector = models.FilterSelector(filter=models.Filter(must=conditions))
        elif ids is None:
            raise ValueError(f"delete_points on {name!r} needs ids or a filter: it never empties a collection.")
        elif not ids:
            return
        else:
            selector = models.PointIdsList(points=list(ids))
        self._call(
            f"delete points of {name!r}", self.client.delete, collection_name=name, points_selector=selector, wait=True
        )

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
        points, next_offset = self._call(
            f"read points of {name!r}",
            self.client.scroll,
            collection_name=name,
            scroll_filter=query_filter,
            limit=limit,
            offset=offset,
            with_payload=_payload_selector(with_payload),
            with_vectors=with_vectors,
            **self._read_consistency(),
        )
        return list(points), next_offset

    def retrieve(
        self, name: str, ids: Sequence[str], *, with_vectors: bool = True, with_payload: bool | Sequence[str] = True
    ) -> list[models.Record]:
        return list(
            self._call(
                f"retrieve points of {name!r}",
                self.client.retrieve,
                collection_name=name,
                ids=list(ids),
                with_payload=_payload_selector(with_payload),
                with_vectors=with_vectors,
                **self._read_consistency(),
            )
        )

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
        """Nearest neighbours (``query_points``). ``exact`` asks a server for a full scan; local mode always scans
        (it is given no search parameters, which it would only warn about)."""
        response = self._call(
            f"query {name!r}",
            self.client.query_points,
            retry=retry,
            collection_name=name,
            query=list(vector),
            limit=limit,
            search_params=models.SearchParams(exact=exact) if self.capabilities.hnsw else None,
            query_filter=query_filter,
            with_payload=with_payload,
            with_vectors=with_vectors,
            **self._read_consistency(),
        )
        return list(response.points)

    # --- helpers -------------------------------------------------------------------------------
    def _read_consistency(self) -> dict[str, Any]:
        """``consistency=all`` on a cluster when :attr:`strong_reads` is set (local mode has one copy)."""
        if self.strong_reads and self.capabilities.cluster:
            return {"consistency": models.ReadConsistencyType.ALL}
        return {}

    def _call(self, what: str, fn: Callable[..., Any], /, *, retry: bool = True, **kwargs: Any) -> Any:
        try:
            return (self._retry(fn) if retry else fn)(**kwargs)
        except Exception as exc:
            raise TargetError(f"Qdrant could not {what} at {self.describe()}: {_short(exc)}") from exc

    def _url(self) -> str:
        """The server's URL without any user name or password in it."""
        parts = urlsplit(str(self.settings.url))
        host = parts.hostname or ""
        netloc = f"[{host}]" if ":" in host else host
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _hnsw_config(hnsw: dict[str, int]) -> models.HnswConfigDiff:
    unknown = sorted(set(hnsw) - {"m", "ef_construct"})
    if unknown:
        raise ConfigError(f"Unknown HNSW parameters {unknown}: the runbook carries m and ef_construct only.")
    return models.HnswConfigDiff(m=hnsw.get("m"), ef_construct=hnsw.get("ef_construct"))


def _payload_selector(with_payload: bool | Sequence[str]) -> bool | models.PayloadSelectorInclude:
    if isinstance(with_payload, bool):
        return with_payload
    return models.PayloadSelectorInclude(include=list(with_payload))


def _enum_value(value: Any) -> str:
    return str(value.value if hasattr(value, "value") else value)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:400]


def _no_flush() -> None:
    return None


def _package_version(package: str) -> str | None:
    try:
        return importlib_metadata.version(package)
    except importlib_metadata.PackageNotFoundError:  # pragma: no cover - installed with the runbook
        return None


def _connect(settings: QdrantSettings) -> QdrantClient:
    """Open qdrant-client for the settings; one clear :class:`ConfigError` when that is impossible. On a server,
    qdrant-client checks that its version and the server's are compatible (it warns on a mismatch)."""
    if settings.is_server:
        try:
            client = QdrantClient(
                url=settings.url,
                api_key=settings.api_key.get_secret_value() if settings.api_key else None,
                prefer_grpc=settings.prefer_grpc,
                timeout=math.ceil(settings.timeout_s),  # whole seconds, rounded up: 0.5 s is 1 s, never 0
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

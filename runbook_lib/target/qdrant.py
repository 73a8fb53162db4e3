"""The Qdrant target: embedded local mode (``QDRANT_PATH``) or a server (``QDRANT_URL`` + ``QDRANT_API_KEY``).

Everything the runbook does to Qdrant goes through :class:`QdrantTarget`, so retries, error
messages and the local/server differences live here. Local mode and a server share qdrant-client's
API; server-only features (deferred indexing, sharding, replication) are no-ops in local mode.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from tenacity import (
    RetryCallState,
    retry,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from runbook_lib.config.settings import QdrantSettings
from runbook_lib.core.mapping import PAYLOAD_ID_KEY
from runbook_lib.errors import ConfigError, TargetError

log = logging.getLogger(__name__)

#: Qdrant's default indexing threshold (kB), restored after a bulk load with indexing deferred.
DEFAULT_INDEXING_THRESHOLD = 10_000

_DISTANCES = {
    "Cosine": models.Distance.COSINE,
    "Euclid": models.Distance.EUCLID,
    "Dot": models.Distance.DOT,
}


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying: timeouts, dropped connections, 429 and 5xx answers, gRPC UNAVAILABLE."""
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in (408, 429, 500, 502, 503, 504)
    if isinstance(exc, ResponseHandlingException | httpx.TransportError | TimeoutError | ConnectionError):
        return True
    try:
        import grpc

        if isinstance(exc, grpc.RpcError):
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            return code in (
                grpc.StatusCode.UNAVAILABLE,
                grpc.StatusCode.DEADLINE_EXCEEDED,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                grpc.StatusCode.ABORTED,
            )
    except ImportError:  # pragma: no cover - grpc ships with qdrant-client
        pass
    return False


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("Qdrant call failed (%s), retry %d", exc, state.attempt_number)


#: Retry policy for every call that writes or reads a batch: 6 tries, exponential backoff with jitter.
retry_transient = retry(
    retry=retry_if_exception(is_transient),
    stop=stop_after_attempt(6),
    wait=wait_exponential_jitter(multiplier=0.5, max=20, jitter=1),
    before_sleep=_log_retry,
    reraise=True,
)


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
    ) -> None:
        """Create a collection for one unnamed float32 vector per point.

        On a server, ``defer_indexing`` sets ``indexing_threshold=0`` so the bulk load does not build
        the HNSW graph segment by segment; :meth:`finish_bulk_load` restores it.
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
            if defer_indexing:
                kwargs["optimizers_config"] = models.OptimizersConfigDiff(indexing_threshold=0)
        self._call(
            f"create collection {name!r}",
            self.client.create_collection,
            collection_name=name,
            vectors_config=models.VectorParams(size=size, distance=qd_distance, datatype=models.Datatype.FLOAT32),
            **kwargs,
        )

    def finish_bulk_load(self, name: str) -> None:
        """Restore indexing after a bulk load (server only)."""
        if self.is_local:
            return
        self._call(
            f"restore indexing of {name!r}",
            self.client.update_collection,
            collection_name=name,
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=DEFAULT_INDEXING_THRESHOLD),
        )

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
        rows = vectors.tolist() if isinstance(vectors, np.ndarray) else vectors
        try:
            _upsert_with_retry(self.client, name, list(ids), rows, list(payloads))
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
    client: QdrantClient, name: str, ids: list[str], vectors: Any, payloads: list[dict[str, Any]]
) -> None:
    client.upsert(collection_name=name, points=models.Batch(ids=ids, vectors=vectors, payloads=payloads), wait=True)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:400]


def connect(settings: QdrantSettings) -> QdrantClient:
    """Open qdrant-client for the settings; one clear :class:`ConfigError` when that is impossible."""
    if settings.is_server:
        try:
            client = QdrantClient(
                url=settings.url,
                api_key=settings.api_key.get_secret_value() if settings.api_key else None,
                prefer_grpc=settings.prefer_grpc,
                timeout=int(settings.timeout_s),
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

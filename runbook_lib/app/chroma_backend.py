"""The ChromaDB side of :class:`~runbook_lib.app.client.VectorDBClient`: the app's store before the migration.

Used when ``VECTOR_DB=chroma`` (a rollback). The client is opened the way the app opens it
(``PersistentClient`` on ``CHROMA_PERSIST_DIR``, or ``HttpClient`` on ``CHROMA_HOST``); collections are
looked up, never created. chromadb is imported on first use, so the app starts without paying for it.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import runbook_lib.app.chroma_writes as chroma_writes
from runbook_lib.app.errors import UnknownCollectionError, WriteDimensionMismatchError, closed_client_error, short_error
from runbook_lib.app.records import Field, GetResult, Records, WriteKind
from runbook_lib.app.results import CollectionInfo, SearchResult, check_dimension
from runbook_lib.config.settings import ChromaSettings
from runbook_lib.errors import RunbookError, SourceError

log = logging.getLogger(__name__)

_CHROMA_INCLUDE = ["documents", "metadatas", "distances", "uris"]
_DIMENSION_ERROR = re.compile(r"dimension of (\d+), got (\d+)")
_T = TypeVar("_T")


class ChromaBackend:
    """One lazily opened ChromaDB client, its collections and their dimensions. Thread-safe."""

    def __init__(self, settings: ChromaSettings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._closed = False
        self._client: Any = None  # chromadb.api.ClientAPI
        self._collections: dict[str, Any] = {}
        self._info: dict[str, CollectionInfo] = {}

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> str:
        return self.settings.describe()

    def close(self) -> None:
        """Release the client. Idempotent."""
        with self._lock:
            self._closed = True
            client, self._client = self._client, None
            self._collections.clear()
            self._info.clear()
        if client is not None:
            close_chroma(client)

    # --- search --------------------------------------------------------------------------------
    def search(self, collection: str, query: list[float], limit: int, where: dict[str, Any] | None) -> SearchResult:
        for attempt in (1, 2):
            col = self._collection(collection)
            info = self._collection_info(collection, col)
            check_dimension(collection, info, query)
            try:
                response = col.query(query_embeddings=[query], n_results=limit, where=where, include=_CHROMA_INCLUDE)
            except Exception as exc:
                if is_chroma_not_found(exc):
                    # The collection was deleted (or recreated) since it was cached: look it up again once.
                    self._forget(collection)
                    if attempt == 1:
                        continue
                    raise UnknownCollectionError(collection, self.describe()) from exc
                raise SourceError(
                    f"ChromaDB could not search collection {collection!r} at {self.describe()}: {short_error(exc)}"
                ) from exc
            return chroma_result(response)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- writes and reads by id (runbook_lib.app.chroma_writes) ---------------------------------
    def write(self, collection: str, kind: WriteKind, recs: Records) -> None:
        """``add`` / ``upsert`` / ``update`` through chromadb, after the same dimension check as Qdrant's."""

        def run(col: Any) -> None:
            info = self._collection_info(collection, col)
            if recs.dimension is not None and info.dimension is not None and recs.dimension != info.dimension:
                raise WriteDimensionMismatchError(collection, info.dimension, recs.dimension)
            chroma_writes.write(col, kind, recs)

        self._run(collection, f"write ({kind}) to", run)

    def delete(self, collection: str, ids: list[str] | None, where: Mapping[str, Any] | None) -> None:
        self._run(collection, "delete records of", lambda col: chroma_writes.delete(col, ids, where))

    def get(
        self,
        collection: str,
        ids: list[str] | None,
        where: Mapping[str, Any] | None,
        limit: int | None,
        offset: int,
        include: Sequence[Field],
    ) -> GetResult:
        return self._run(collection, "read", lambda col: chroma_writes.get(col, ids, where, limit, offset, include))

    def count(self, collection: str) -> int:
        return self._run(collection, "count", chroma_writes.count)

    def _run(self, collection: str, what: str, fn: Callable[[Any], _T]) -> _T:
        """``fn(collection object)``; a collection deleted since it was cached is looked up once more."""
        for attempt in (1, 2):
            col = self._collection(collection)
            try:
                return fn(col)
            except RunbookError:
                raise
            except Exception as exc:
                if is_chroma_not_found(exc):
                    self._forget(collection)
                    if attempt == 1:
                        continue
                    raise UnknownCollectionError(collection, self.describe()) from exc
                found = _DIMENSION_ERROR.search(str(exc))
                if found:
                    raise WriteDimensionMismatchError(collection, int(found[1]), int(found[2])) from exc
                raise SourceError(
                    f"ChromaDB could not {what} collection {collection!r} at {self.describe()}: {short_error(exc)}"
                ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_client(self) -> Any:
        with self._lock:
            if self._closed:
                raise closed_client_error(self.describe())
            if self._client is None:
                self._client = open_chroma(self.settings)
            return self._client

    def _collection(self, collection: str) -> Any:
        cached = self._collections.get(collection)
        if cached is not None:
            return cached
        client = self._open_client()
        try:
            col = client.get_collection(collection)  # never create: the app's data must already be there
        except Exception as exc:
            if is_chroma_not_found(exc):
                raise UnknownCollectionError(collection, self.describe()) from exc
            raise SourceError(
                f"ChromaDB could not open collection {collection!r} at {self.describe()}: {short_error(exc)}"
            ) from exc
        with self._lock:
            self._collections[collection] = col
        return col

    def _collection_info(self, collection: str, col: Any) -> CollectionInfo:
        cached = self._info.get(collection)
        if cached is not None:
            return cached
        try:
            sample = col.get(limit=1, include=["embeddings"])
        except Exception as exc:
            raise SourceError(
                f"ChromaDB could not read collection {collection!r} at {self.describe()}: {short_error(exc)}"
            ) from exc
        embeddings = sample.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            return CollectionInfo(dimension=None, space=None)  # empty: nothing to check, nothing cached
        info = CollectionInfo(dimension=len(embeddings[0]), space=None)
        with self._lock:
            self._info[collection] = info
        return info

    def _forget(self, collection: str) -> None:
        with self._lock:
            self._collections.pop(collection, None)
            self._info.pop(collection, None)

    # --- health probes: (number of collections, seconds the listing took) ----------------------
    def probe_local(self) -> tuple[int, float]:
        """Count the collections through this backend's own client (opening it if needed)."""
        chroma = self._open_client()
        started = time.perf_counter()
        count = int(chroma.count_collections())
        return count, time.perf_counter() - started

    def probe_server(self, timeout_s: float) -> tuple[int, float]:
        """Count the collections through a fresh client whose requests time out after ``timeout_s``."""
        chroma = open_chroma(self.settings.model_copy(update={"timeout_s": timeout_s}))
        try:
            started = time.perf_counter()
            count = int(chroma.count_collections())
            return count, time.perf_counter() - started
        finally:
            close_chroma(chroma)


def chroma_result(response: Mapping[str, Any]) -> SearchResult:
    """The first query's rows of a ``Collection.query`` response."""

    def first(key: str, n: int) -> list[Any]:
        rows = response.get(key)
        if rows is None or len(rows) == 0 or rows[0] is None:
            return [None] * n
        return list(rows[0])

    ids = [str(i) for i in first("ids", 0)]
    n = len(ids)
    return SearchResult(
        ids=ids,
        documents=first("documents", n),
        metadatas=[dict(m) if m else {} for m in first("metadatas", n)],
        distances=[float(d) for d in first("distances", n)],
        uris=first("uris", n),
    )


def open_chroma(cs: ChromaSettings) -> Any:
    """Open the app's ChromaDB through the runbook's one client factory (``CHROMA_TIMEOUT`` applied on a server)."""
    from runbook_lib.chroma.clients import open_client

    return open_client(cs)


def close_chroma(client: Any) -> None:
    from runbook_lib.chroma.clients import close_client

    close_client(client)


def is_chroma_not_found(exc: BaseException) -> bool:
    """Whether chromadb's ``exc`` says the collection does not exist."""
    from chromadb.errors import NotFoundError

    if isinstance(exc, NotFoundError):
        return True
    text = str(exc).lower()
    return "does not exist" in text and "collection" in text

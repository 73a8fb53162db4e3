"""The app's own ChromaDB, as :class:`~runbook_lib.app.client.VectorDBClient` uses it with ``VECTOR_DB=chroma`` or
``dual``: the live directory or server, opened through :func:`~runbook_lib.chroma.clients.open_client` on first use.

Collections are looked up by name, never created, and cached; one deleted (or re-created) since it was cached is
looked up once more before :class:`CollectionNotFound` is raised. chromadb's other errors propagate as they are, for
the app layer to put in one sentence. chromadb is imported on first use, so an app starts without paying for it.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

from runbook_lib.config.settings import ChromaSettings

#: The columns of a write and a read, by chromadb's names.
Column = Literal["embeddings", "documents", "metadatas", "uris"]
WriteKind = Literal["add", "upsert", "update"]

_DIMENSION_ERROR = re.compile(r"dimension of (\d+), got (\d+)")
_T = TypeVar("_T")


class CollectionNotFound(Exception):
    """The collection does not exist in the app's ChromaDB."""


class WrongDimension(Exception):
    """chromadb refused embeddings of another dimension than the collection's."""

    def __init__(self, expected: int, found: int) -> None:
        super().__init__(f"dimension {found}, expected {expected}")
        self.expected = expected
        self.found = found


class ClientClosed(Exception):
    """The client was closed."""


class LiveChroma:
    """One lazily opened ChromaDB client of the app, its collections and their dimensions. Thread-safe."""

    def __init__(self, settings: ChromaSettings) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._closed = False
        self._client: Any = None
        self._collections: dict[str, Any] = {}
        self._dimensions: dict[str, int] = {}

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Release the client. Idempotent."""
        from runbook_lib.chroma.clients import close_client

        with self._lock:
            self._closed = True
            client, self._client = self._client, None
            self._collections.clear()
            self._dimensions.clear()
        if client is not None:
            close_client(client)

    # --- reads -----------------------------------------------------------------------------------
    def query(
        self,
        name: str,
        vector: Sequence[float],
        limit: int,
        where: Mapping[str, Any] | None,
        where_document: Mapping[str, Any] | None = None,
    ) -> Any:
        """chromadb's ``QueryResult`` for one vector: ids, documents, metadatas, distances and uris."""
        return self._run(
            name,
            lambda col: col.query(
                query_embeddings=[list(vector)],
                n_results=limit,
                where=dict(where) if where else None,
                where_document=dict(where_document) if where_document else None,
                include=["documents", "metadatas", "distances", "uris"],
            ),
        )

    def get(
        self, name: str, *, ids: list[str] | None, where: Mapping[str, Any] | None, include: Sequence[Column]
    ) -> Any:
        """chromadb's ``GetResult`` for ``ids`` (or every record) matching ``where``, with the ``include`` columns."""
        return self._run(
            name, lambda col: col.get(ids=ids, where=dict(where) if where else None, include=list(include))
        )

    def count(self, name: str) -> int:
        return int(self._run(name, lambda col: col.count()))

    def dimension(self, name: str) -> int | None:
        """The collection's vector dimension from its first record (cached), or None while it is empty."""
        cached = self._dimensions.get(name)
        if cached is not None:
            return cached
        sample = self._run(name, lambda col: col.get(limit=1, include=["embeddings"]))
        embeddings = sample.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            return None
        dimension = len(embeddings[0])
        with self._lock:
            self._dimensions[name] = dimension
        return dimension

    # --- writes ----------------------------------------------------------------------------------
    def write(self, name: str, kind: WriteKind, ids: list[str], columns: Mapping[Column, Any]) -> None:
        """``Collection.add`` / ``upsert`` / ``update`` of ``ids`` with the given columns."""
        self._run(name, lambda col: getattr(col, kind)(ids=ids, **columns))

    def delete(self, name: str, ids: list[str] | None, where: Mapping[str, Any] | None) -> None:
        self._run(name, lambda col: col.delete(ids=ids, where=dict(where) if where else None))

    # --- collections -----------------------------------------------------------------------------
    def collection_names(self) -> list[str]:
        return sorted(c.name for c in self._open_client().list_collections())

    def create_collection(self, name: str, space: str) -> None:
        """A collection of ``space`` with no embedding function (its dimension is set by the first write)."""
        self._open_client().create_collection(name, configuration={"hnsw": {"space": space}}, embedding_function=None)

    def delete_collection(self, name: str) -> None:
        self._forget(name)
        try:
            self._open_client().delete_collection(name)
        except Exception as exc:
            if _is_not_found(exc):
                raise CollectionNotFound(name) from exc
            raise

    # --- health probes: (number of collections, seconds the listing took) ------------------------
    def probe(self) -> tuple[int, float]:
        """Count the collections through this client (opening it if needed)."""
        client = self._open_client()
        started = time.perf_counter()
        count = int(client.count_collections())
        return count, time.perf_counter() - started

    def probe_fresh(self, timeout_s: float) -> tuple[int, float]:
        """Count the collections through a fresh client whose requests time out after ``timeout_s``."""
        from runbook_lib.chroma.clients import close_client, open_client

        client = open_client(self.settings.model_copy(update={"timeout_s": timeout_s}))
        try:
            started = time.perf_counter()
            count = int(client.count_collections())
            return count, time.perf_counter() - started
        finally:
            close_client(client)

    # --- collections -----------------------------------------------------------------------------
    def _run(self, name: str, fn: Callable[[Any], _T]) -> _T:
        for attempt in (1, 2):
            col = self._collection(name)
            try:
                return fn(col)
            except Exception as exc:
                if _is_not_found(exc):
                    self._forget(name)
                    if attempt == 1:
                        continue
                    raise CollectionNotFound(name) from exc
                found = _DIMENSION_ERROR.search(str(exc))
                if found:
                    raise WrongDimension(int(found[1]), int(found[2])) from exc
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _open_client(self) -> Any:
        from runbook_lib.chroma.clients import open_client

        with self._lock:
            if self._closed:
                raise ClientClosed
            if self._client is None:
                self._client = open_client(self.settings)
            return self._client

    def _collection(self, name: str) -> Any:
        cached = self._collections.get(name)
        if cached is not None:
            return cached
        client = self._open_client()
        try:
            col = client.get_collection(name)  # never create: the app's data must already be there
        except Exception as exc:
            if _is_not_found(exc):
                raise CollectionNotFound(name) from exc
            raise
        with self._lock:
            self._collections[name] = col
        return col

    def _forget(self, name: str) -> None:
        with self._lock:
            self._collections.pop(name, None)
            self._dimensions.pop(name, None)


def _is_not_found(exc: BaseException) -> bool:
    """Whether chromadb's ``exc`` says the collection does not exist."""
    from chromadb.errors import NotFoundError

    if isinstance(exc, NotFoundError):
        return True
    text = str(exc).lower()
    return "does not exist" in text and "collection" in text

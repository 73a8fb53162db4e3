"""The ChromaDB side of :class:`~runbook_lib.app.client.VectorDBClient`: the app's store before the migration.

Used when ``VECTOR_DB=chroma`` (a rollback) or ``dual``. ChromaDB itself is reached through
:class:`~runbook_lib.chroma.live.LiveChroma` (the app's directory or server, collections looked up, never created);
this adds what the app promises on both stores: the same dimension checks, errors and result shapes as Qdrant's.

The wrapper never computes embeddings: chromadb 1.5 embeds the documents of an ``update`` that brings documents
without embeddings (with the collection's embedding function, which may download a model), so such an update
passes the records' current embeddings back unchanged. :meth:`ChromaBackend.get` orders records as
:mod:`runbook_lib.app.qdrant_writes` does (the ``ids`` asked for, else by Chroma id), so both stores answer a
``limit``/``offset`` page alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np

from runbook_lib.app.errors import UnknownCollectionError, WriteDimensionMismatchError, closed_client_error, short_error
from runbook_lib.app.records import Field, GetResult, Records, WriteKind, get_result, page
from runbook_lib.app.results import CollectionInfo, SearchResult, check_dimension
from runbook_lib.chroma.live import ClientClosed, CollectionNotFound, Column, LiveChroma, WrongDimension
from runbook_lib.config.settings import ChromaSettings
from runbook_lib.errors import RunbookError, SourceError

#: Ids per ``get`` request, well under SQLite's 32,766 variables per statement.
MAX_IDS_PER_REQUEST = 10_000
_T = TypeVar("_T")


class ChromaBackend:
    """The app's ChromaDB, answered like the Qdrant side. Thread-safe."""

    def __init__(self, settings: ChromaSettings) -> None:
        self.settings = settings
        self._chroma = LiveChroma(settings)

    @property
    def closed(self) -> bool:
        return self._chroma.closed

    def describe(self) -> str:
        return self.settings.describe()

    def close(self) -> None:
        """Release the client. Idempotent."""
        self._chroma.close()

    # --- search ----------------------------------------------------------------------------------
    def search(
        self,
        collection: str,
        query: list[float],
        limit: int,
        where: dict[str, Any] | None,
        where_document: dict[str, Any] | None = None,
    ) -> SearchResult:
        check_dimension(collection, self._info(collection), query)
        response = self._call(
            collection, "search", lambda: self._chroma.query(collection, query, limit, where, where_document)
        )
        return chroma_result(response)

    def _info(self, collection: str) -> CollectionInfo:
        dimension = self._call(collection, "read", lambda: self._chroma.dimension(collection))
        return CollectionInfo(dimension=dimension, space=None)

    # --- writes and reads by id ------------------------------------------------------------------
    def write(self, collection: str, kind: WriteKind, recs: Records) -> None:
        """``add`` / ``upsert`` / ``update`` through chromadb, after the same dimension check as Qdrant's (copied
        records' floats written so Chroma stores them as they are)."""
        recs = recs.for_chroma()
        expected = self._info(collection).dimension
        if recs.dimension is not None and expected is not None and recs.dimension != expected:
            raise WriteDimensionMismatchError(collection, expected, recs.dimension)
        ids, embeddings = recs.ids, recs.embeddings
        documents, metadatas, uris = recs.documents, recs.metadatas, recs.uris
        if kind == "update" and embeddings is None and documents is not None:
            current = self._by_id(collection, ids, ["embeddings"], where=None)
            rows = [i for i, rid in enumerate(ids) if rid in current]  # chromadb ignores the others anyway
            if not rows:
                return
            ids = [ids[i] for i in rows]
            embeddings = np.stack([np.asarray(current[rid]["embedding"], dtype=np.float32) for rid in ids])
            documents = [documents[i] for i in rows]
            metadatas = None if metadatas is None else [metadatas[i] for i in rows]
            uris = None if uris is None else [uris[i] for i in rows]
        given: dict[Column, Any] = {"embeddings": embeddings, "documents": documents, "metadatas": metadatas}
        given["uris"] = uris
        columns = {name: values for name, values in given.items() if values is not None}
        self._call(collection, f"write ({kind}) to", lambda: self._chroma.write(collection, kind, ids, columns))

    def delete(self, collection: str, ids: list[str] | None, where: Mapping[str, Any] | None) -> None:
        self._call(collection, "delete records of", lambda: self._chroma.delete(collection, ids, where))

    def get(
        self,
        collection: str,
        ids: list[str] | None,
        where: Mapping[str, Any] | None,
        limit: int | None,
        offset: int,
        include: Sequence[Field],
    ) -> GetResult:
        """Records by id (in that order) or all matching records ordered by Chroma id, then ``offset``/``limit``."""
        if ids is not None:
            found = self._by_id(collection, ids, list(include), where=where)
            selected = page([i for i in ids if i in found], limit, offset)
        else:
            listed = self._call(
                collection, "read", lambda: self._chroma.get(collection, ids=None, where=where, include=[])
            )
            selected = page(sorted(str(i) for i in listed["ids"]), limit, offset)
            found = self._by_id(collection, selected, list(include), where=None) if selected and include else {}
        rows = [found.get(i, {}) for i in selected]
        return get_result(
            include,
            selected,
            [r.get("embedding") for r in rows],
            [r.get("document") for r in rows],
            [r.get("metadata") for r in rows],
            [r.get("uri") for r in rows],
        )

    def count(self, collection: str) -> int:
        return self._call(collection, "count", lambda: self._chroma.count(collection))

    def _by_id(
        self, collection: str, ids: list[str], include: list[Column], *, where: Mapping[str, Any] | None
    ) -> dict[str, dict[str, Any]]:
        """Chroma id -> {"embedding", "document", "metadata", "uri"} (the fields in ``include``) of the ids found."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), MAX_IDS_PER_REQUEST):
            chunk = ids[start : start + MAX_IDS_PER_REQUEST]
            response = self._call(
                collection,
                "read",
                lambda chunk=chunk: self._chroma.get(collection, ids=chunk, where=where, include=include),
            )
            columns = {
                "embedding": response.get("embeddings"),
                "document": response.get("documents"),
                "metadata": response.get("metadatas"),
                "uri": response.get("uris"),
            }
            for k, rid in enumerate(str(i) for i in response["ids"]):
                found[rid] = {name: values[k] for name, values in columns.items() if values is not None}
        return found

    def _call(self, collection: str, what: str, fn: Callable[[], _T]) -> _T:
        """``fn()``, with ChromaDB's failures as the app's one-sentence errors."""
        try:
            return fn()
        except RunbookError:
            raise
        except ClientClosed:
            raise closed_client_error(self.describe()) from None
        except CollectionNotFound as exc:
            raise UnknownCollectionError(collection, self.describe()) from exc
        except WrongDimension as exc:
            raise WriteDimensionMismatchError(collection, exc.expected, exc.found) from exc
        except Exception as exc:
            raise SourceError(
                f"ChromaDB could not {what} collection {collection!r} at {self.describe()}: {short_error(exc)}"
            ) from exc

    # --- collections -----------------------------------------------------------------------------
    def collection_names(self) -> list[str]:
        return self._call("", "list the collections of", self._chroma.collection_names)

    def create_collection(self, collection: str, space: str, dimension: int | None = None) -> None:
        """A collection of ``space`` with no embedding function (the app embeds; ``dimension`` is set by the first
        write, as Chroma does)."""
        self._call(collection, "create", lambda: self._chroma.create_collection(collection, space))

    def delete_collection(self, collection: str) -> None:
        self._call(collection, "delete", lambda: self._chroma.delete_collection(collection))

    # --- health probes: (number of collections, seconds the listing took) ------------------------
    def probe_local(self) -> tuple[int, float]:
        """Count the collections through this backend's own client (opening it if needed)."""
        try:
            return self._chroma.probe()
        except ClientClosed:
            raise closed_client_error(self.describe()) from None

    def probe_server(self, timeout_s: float) -> tuple[int, float]:
        """Count the collections through a fresh client whose requests time out after ``timeout_s``."""
        return self._chroma.probe_fresh(timeout_s)


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

""":class:`VectorDBClient`'s Chroma-shaped writes and reads by id: ``add``, ``upsert``, ``update``, ``delete``,
``get``, ``count`` (and the dual-write journal's backlog and replay).

The arguments are Chroma's and so are the semantics (chromadb 1.5, see :mod:`runbook_lib.app.records`), whichever
store answers: Qdrant writes exactly the points the migration writes (:mod:`runbook_lib.app.qdrant_writes`), so a
record written through the wrapper after cutover is indistinguishable from a migrated one, and ``runbook verify``
/ ``runbook sync`` see no difference. With ``VECTOR_DB=dual`` writes go to both stores (:mod:`runbook_lib.app.dual`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from runbook_lib.app.qdrant_backend import QdrantBackend
from runbook_lib.app.records import (
    Field,
    GetResult,
    Records,
    WriteKind,
    ids_argument,
    include_argument,
    page_argument,
    select_rows,
    to_records,
)
from runbook_lib.core.document_filters import document_predicate
from runbook_lib.core.filters import to_qdrant_filter
from runbook_lib.errors import ConfigError

if TYPE_CHECKING:
    from runbook_lib.app.chroma_backend import ChromaBackend
    from runbook_lib.app.dual import DualWriter
    from runbook_lib.app.journal import Journal

Embeddings = Sequence[Sequence[float]] | np.ndarray


class WriteMethods:
    """Mixed into :class:`~runbook_lib.app.client.VectorDBClient`, which sets these attributes."""

    _store: QdrantBackend | ChromaBackend  # the store reads come from (the primary under VECTOR_DB=dual)
    _dual: DualWriter | None
    journal: Journal

    # --- writes --------------------------------------------------------------------------------
    def add(
        self,
        collection: str,
        ids: str | Sequence[str],
        embeddings: Embeddings,
        documents: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        uris: Sequence[str | None] | None = None,
    ) -> None:
        """Add records; ids that already exist are left as they are (Chroma ignores them too).

        Raises :class:`ValueError` for arguments Chroma would refuse, :class:`UnknownCollectionError`,
        a :class:`DimensionMismatchError` for embeddings of the wrong dimension, another :class:`RunbookError`
        when the store fails. Collections are never created.
        """
        self._write(collection, "add", to_records("add", ids, embeddings, documents, metadatas, uris))

    def upsert(
        self,
        collection: str,
        ids: str | Sequence[str],
        embeddings: Embeddings,
        documents: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        uris: Sequence[str | None] | None = None,
    ) -> None:
        """Add new records and update existing ones (the embedding replaced, other fields as :meth:`update`)."""
        self._write(collection, "upsert", to_records("upsert", ids, embeddings, documents, metadatas, uris))

    def update(
        self,
        collection: str,
        ids: str | Sequence[str],
        embeddings: Embeddings | None = None,
        documents: Sequence[str | None] | None = None,
        metadatas: Sequence[Mapping[str, Any] | None] | None = None,
        uris: Sequence[str | None] | None = None,
    ) -> None:
        """Change only the fields given of existing records (ids that do not exist are ignored, as in Chroma).

        A None entry keeps that record's field; metadata is merged key by key and a None value removes its key.
        A new document does not re-embed the record (the wrapper never computes embeddings).
        """
        self._write(collection, "update", to_records("update", ids, embeddings, documents, metadatas, uris))

    def delete(
        self,
        collection: str,
        ids: str | Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> None:
        """Delete the records with these ids, or matching ``where`` and ``where_document`` (Chroma's filter
        languages), or all of those. A ``where_document`` is resolved to the matching ids first."""
        id_list = ids_argument(ids)
        where = _where(where)
        if id_list is None and where is None and not where_document:
            raise ValueError(
                "delete needs ids or a non-empty where (or where_document) filter: it never deletes a whole collection."
            )
        if where_document:
            id_list = self.get(collection, id_list, where, include=(), where_document=where_document).ids
            where = None
            if not id_list:
                return
        if self._dual is not None:
            self._dual.delete(collection, id_list, where)
        else:
            self._store.delete(collection, id_list, where)

    # --- reads ---------------------------------------------------------------------------------
    def get(
        self,
        collection: str,
        ids: str | Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        include: Sequence[str] = ("metadatas", "documents"),
        where_document: Mapping[str, Any] | None = None,
    ) -> GetResult:
        """Records by id (in the order asked), or every record matching ``where`` and ``where_document`` ordered by
        Chroma id; then ``offset`` and ``limit``. ``include``: any of ``embeddings``, ``documents``, ``metadatas``,
        ``uris``. ``where_document`` is answered exactly as Chroma does (:mod:`runbook_lib.core.document_filters`)."""
        fields = include_argument(include)
        limit, start = page_argument(limit, offset)
        id_list, where = ids_argument(ids), _where(where)
        if not where_document:
            return self._store.get(collection, id_list, where, limit, start, fields)
        matches = document_predicate(where_document)
        read: tuple[Field, ...] = tuple(dict.fromkeys((*fields, "documents")))
        if isinstance(self._store, QdrantBackend):  # narrowed by the exact substring prefilter
            found = self._store.get(collection, id_list, where, None, 0, read, where_document)
        else:
            found = self._store.get(collection, id_list, where, None, 0, read)
        rows = [i for i, document in enumerate(found.documents or []) if matches(document)]
        return select_rows(found, rows[start:] if limit is None else rows[start : start + limit], fields)

    def count(self, collection: str) -> int:
        """How many records ``collection`` holds (in the store reads come from)."""
        return self._store.count(collection)

    # --- the dual-write journal ----------------------------------------------------------------
    def journal_backlog(self) -> int:
        """How many writes the journal holds that the secondary store missed and no sync has replayed yet."""
        return self.journal.backlog()

    def replay_journal(self) -> int:
        """Under ``VECTOR_DB=dual``: copy every pending journal entry's records from the store that has them to
        the one that missed them; return how many entries were replayed (see :meth:`DualWriter.replay`)."""
        if self._dual is None:
            raise ConfigError("replay_journal needs VECTOR_DB=dual: it copies records between the two stores.")
        return self._dual.replay()

    def _write(self, collection: str, kind: WriteKind, recs: Records) -> None:
        if self._dual is not None:
            self._dual.write(collection, kind, recs)
        else:
            self._store.write(collection, kind, recs)


def _where(where: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A validated ``where`` (the same check for both stores, as for search); ``{}`` means no filter."""
    if not where:
        return None
    to_qdrant_filter(where)
    return dict(where)

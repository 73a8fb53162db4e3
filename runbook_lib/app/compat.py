"""A drop-in for chromadb's client: an app moves by changing the line that makes its client.

``client = chromadb.PersistentClient(path=...)`` becomes ``client = runbook_lib.app.compat.Client()``, configured
from the environment as :class:`~runbook_lib.app.client.VectorDBClient` is (``VECTOR_DB`` = ``qdrant`` | ``chroma``
| ``dual``, ``QDRANT_URL`` / ``QDRANT_EDGE_PATH`` / ``QDRANT_PATH``, ``CHROMA_PERSIST_DIR``...). Its collections
have chromadb 1.5's ``add``, ``upsert``, ``update``, ``delete``, ``get``, ``query``, ``count`` and ``peek`` with the
same arguments, and answer with chromadb's ``GetResult`` / ``QueryResult`` dicts (the same keys, ``included``,
Chroma's distances, a record without metadata as ``{}`` or ``None`` as Chroma answers), over :class:`VectorDBClient`.

Embeddings: what the app passes, or its documents / ``query_texts`` embedded with the collection's embedding
function -- the one the app passes to :meth:`Client.get_collection`, else the one Chroma recorded in the
collection's configuration, carried by the migration into the run's ``embedding_functions.json``
(``VECTOR_DB_EMBEDDING_FUNCTIONS`` names that file) and rebuilt with chromadb's own registry
(``chromadb.utils.embedding_functions``). Without either, a call that needs one is refused in one sentence.

What still differs from chromadb: ``get`` orders records by Chroma id, with ``ids`` too (Chroma: by insertion),
collection
``metadata`` is not kept, ``query(ids=...)`` is answered over Qdrant only, ``query_images``/``query_uris`` and
``data`` are refused, and a
collection created here exists in the store from its first write (its dimension is the first embedding's).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runbook_lib.app.client import VectorDBClient
from runbook_lib.app.errors import UnknownCollectionError
from runbook_lib.app.records import INCLUDABLE, GetResult
from runbook_lib.chroma.embedding_functions import rebuild_embedding_function
from runbook_lib.errors import ConfigError

EMBEDDING_FUNCTIONS_VARIABLE = "VECTOR_DB_EMBEDDING_FUNCTIONS"
QUERY_INCLUDABLE: tuple[str, ...] = ("embeddings", "documents", "metadatas", "distances", "uris")
DEFAULT_GET_INCLUDE: tuple[str, ...] = ("metadatas", "documents")
DEFAULT_QUERY_INCLUDE: tuple[str, ...] = ("metadatas", "documents", "distances")
DEFAULT_SPACE = "l2"
_SPACES = ("l2", "cosine", "ip")


def recorded_embedding_functions(env: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """collection -> ``{"name", "config"}`` as Chroma recorded it, from the file ``VECTOR_DB_EMBEDDING_FUNCTIONS``
    names (written by the migration next to its run); ``{}`` when the variable is unset."""
    raw = (env.get(EMBEDDING_FUNCTIONS_VARIABLE) or "").strip()
    if not raw:
        return {}
    path = Path(raw).expanduser()
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{EMBEDDING_FUNCTIONS_VARIABLE}={raw!r} cannot be read as the run's embedding_functions.json ({exc}): "
            "point it at that file in the migration's run folder, or unset it."
        ) from None
    if not isinstance(recorded, dict):
        raise ConfigError(f"{path} is not an embedding_functions.json written by the migration: point at that file.")
    return {str(k): v for k, v in recorded.items() if isinstance(v, dict)}


class Client:
    """chromadb's client API over :class:`VectorDBClient` (``env`` defaults to ``os.environ``)."""

    #: What this client's collections are (a subclass may make them a subclass of :class:`Collection`).
    collection_type: type[Collection]

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.vector_db = VectorDBClient(env)
        self._recorded = recorded_embedding_functions(env)
        self._pending: dict[str, str] = {}  # created here, not yet written: name -> Chroma space

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.vector_db.close()

    # --- collections ---------------------------------------------------------------------------
    def list_collections(self, limit: int | None = None, offset: int | None = None) -> list[Collection]:
        names = sorted(set(self.vector_db.collection_names()) | set(self._pending))
        names = names[offset or 0 :] if limit is None else names[offset or 0 : (offset or 0) + limit]
        return [self.collection_type(self, name, None) for name in names]

    def count_collections(self) -> int:
        return len(set(self.vector_db.collection_names()) | set(self._pending))

    def get_collection(self, name: str, embedding_function: Any = None, data_loader: Any = None) -> Collection:
        """The collection ``name``; :class:`UnknownCollectionError` when it does not exist."""
        _no_data_loader(data_loader)
        if name not in self._pending and name not in self.vector_db.collection_names():
            raise UnknownCollectionError(name, self.vector_db.describe())
        return self.collection_type(self, name, embedding_function)

    def create_collection(
        self,
        name: str,
        configuration: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        embedding_function: Any = None,
        data_loader: Any = None,
        get_or_create: bool = False,
    ) -> Collection:
        """A new empty collection (``configuration={"hnsw": {"space": ...}}`` or ``metadata={"hnsw:space": ...}``)."""
        _no_data_loader(data_loader)
        if name in self._pending or name in self.vector_db.collection_names():
            if get_or_create:
                return self.collection_type(self, name, embedding_function)
            raise ConfigError(f"Collection {name!r} already exists: use get_collection or get_or_create_collection.")
        self._pending[name] = _space(configuration, metadata)
        return self.collection_type(self, name, embedding_function)

    def get_or_create_collection(
        self,
        name: str,
        configuration: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        embedding_function: Any = None,
        data_loader: Any = None,
    ) -> Collection:
        return self.create_collection(name, configuration, metadata, embedding_function, data_loader, True)

    def delete_collection(self, name: str) -> None:
        if self._pending.pop(name, None) is None:
            self.vector_db.delete_collection(name)

    # --- what collections share ----------------------------------------------------------------
    def pending(self, name: str) -> bool:
        return name in self._pending

    def materialise(self, name: str, dimension: int) -> None:
        """Create a collection made here in the store, at its first write."""
        space = self._pending.get(name)
        if space is not None:
            self.vector_db.create_collection(name, space, dimension)
            del self._pending[name]

    def recorded_embedding_function(self, name: str) -> Any:
        recorded = self._recorded.get(name)
        return None if recorded is None else rebuild_embedding_function(name, recorded)


class Collection:
    """One collection with chromadb 1.5's methods and result shapes."""

    def __init__(self, client: Client, name: str, embedding_function: Any) -> None:
        self._client = client
        self._db = client.vector_db
        self.name = name
        self.metadata: dict[str, Any] | None = None
        self._embedding_function = embedding_function
        self._embedding_function_resolved = embedding_function is not None

    def __repr__(self) -> str:
        return f"Collection(name={self.name})"

    # --- embeddings ----------------------------------------------------------------------------
    @property
    def embedding_function(self) -> Any:
        """The app's embedding function, else the one Chroma recorded (rebuilt on first use), else None."""
        if not self._embedding_function_resolved:
            self._embedding_function = self._client.recorded_embedding_function(self.name)
            self._embedding_function_resolved = True
        return self._embedding_function

    def _embed(self, texts: list[str], what: str, *, query: bool = False) -> np.ndarray:
        """``texts`` embedded as chromadb embeds them (``embed_query`` for queries, when the function has it)."""
        function = self.embedding_function
        if function is None:
            raise ConfigError(
                f"Collection {self.name!r} has no embedding function to embed {what}: pass embedding_function= to "
                f"get_collection, point {EMBEDDING_FUNCTIONS_VARIABLE} at the migration's embedding_functions.json, "
                "or pass the embeddings."
            )
        embed = function.embed_query if query and hasattr(function, "embed_query") else function
        return np.asarray(embed(input=texts), dtype=np.float32)

    def _embeddings(self, embeddings: Any, documents: Any) -> Any:
        """The embeddings given, else the documents embedded (None when neither is given)."""
        if embeddings is not None:
            return _rows(embeddings)
        if documents is None:
            return None
        texts = [documents] if isinstance(documents, str) else list(documents)
        if any(not isinstance(t, str) for t in texts):
            raise ValueError("Every document to embed must be a string: pass embeddings for records without one.")
        return self._embed(texts, "these documents")

    # --- writes --------------------------------------------------------------------------------
    def add(
        self,
        ids: str | Sequence[str],
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
        images: Any = None,
        uris: Any = None,
    ) -> None:
        _no_images(images)
        _unique(ids)
        vectors = self._embeddings(embeddings, documents)
        self._before_write(vectors)
        self._db.add(self.name, ids, vectors, _list(documents), _list(metadatas), _list(uris))

    def upsert(
        self,
        ids: str | Sequence[str],
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
        images: Any = None,
        uris: Any = None,
    ) -> None:
        _no_images(images)
        _unique(ids)
        vectors = self._embeddings(embeddings, documents)
        self._before_write(vectors)
        self._db.upsert(self.name, ids, vectors, _list(documents), _list(metadatas), _list(uris))

    def update(
        self,
        ids: str | Sequence[str],
        embeddings: Any = None,
        metadatas: Any = None,
        documents: Any = None,
        images: Any = None,
        uris: Any = None,
    ) -> None:
        """Chroma's update; new documents without embeddings are embedded with the collection's embedding function
        (refused without one, as Chroma does)."""
        _no_images(images)
        _unique(ids)
        if self._client.pending(self.name):
            return  # nothing to update yet
        vectors = self._embeddings(embeddings, documents)
        self._db.update(self.name, ids, vectors, _list(documents), _list(metadatas), _list(uris))

    def delete(
        self,
        ids: str | Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
    ) -> dict[str, int]:
        """chromadb's delete: the records matching every argument given; ``{"deleted": how many}``."""
        if ids is None and not where and not where_document:
            raise ValueError("delete needs ids, where or where_document: pass at least one of them.")
        if self._client.pending(self.name):
            return {"deleted": 0}
        before = self._db.count(self.name)
        self._db.delete(self.name, ids, where, where_document)
        return {"deleted": max(0, before - self._db.count(self.name))}

    def _before_write(self, vectors: Any) -> None:
        if vectors is not None and len(vectors):
            self._client.materialise(self.name, int(np.asarray(vectors).shape[1]))

    # --- reads ---------------------------------------------------------------------------------
    def count(self) -> int:
        return 0 if self._client.pending(self.name) else self._db.count(self.name)

    def get(
        self,
        ids: str | Sequence[str] | None = None,
        where: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        where_document: Mapping[str, Any] | None = None,
        include: Sequence[str] = DEFAULT_GET_INCLUDE,
    ) -> dict[str, Any]:
        """chromadb's ``GetResult``: ``ids``, ``embeddings``, ``documents``, ``uris``, ``data``, ``metadatas``,
        ``included`` (a field not included is None)."""
        fields = _include(include, INCLUDABLE, "get")
        if self._client.pending(self.name):
            empty = np.zeros((0, 0), dtype=np.float32) if "embeddings" in fields else None
            return _get_result(GetResult([], empty, [], [], [], list(fields)), fields)
        read = tuple(dict.fromkeys((*fields, "uris"))) if "metadatas" in fields else fields
        if ids is not None and not isinstance(ids, str):  # one order for every get, as Chroma has (its: insertion)
            ids = sorted(dict.fromkeys(ids))
        found = self._db.get(self.name, ids, where, limit, offset, read, where_document)
        return _get_result(found, fields)

    def peek(self, limit: int = 10) -> dict[str, Any]:
        return self.get(limit=limit, include=("metadatas", "documents", "embeddings"))

    def query(
        self,
        query_embeddings: Any = None,
        query_texts: str | Sequence[str] | None = None,
        query_images: Any = None,
        query_uris: Any = None,
        ids: Any = None,
        n_results: int = 10,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        include: Sequence[str] = DEFAULT_QUERY_INCLUDE,
    ) -> dict[str, Any]:
        """chromadb's ``QueryResult``: one list per query of ``ids``, ``distances``, ``documents``, ``metadatas``,
        ``uris`` (``embeddings``: one array per query), nearest first."""
        if query_images is not None or query_uris is not None:
            raise ConfigError(
                "query_images and query_uris are not supported by this client: query with query_embeddings "
                "or query_texts, and narrow with where, where_document or ids."
            )
        if (query_embeddings is None) == (query_texts is None):
            raise ValueError("query needs exactly one of query_embeddings or query_texts.")
        if isinstance(n_results, bool) or not isinstance(n_results, int) or n_results < 1:
            raise ValueError(f"n_results must be a positive integer, got {n_results!r}.")
        fields = _include(include, QUERY_INCLUDABLE, "query")
        if query_texts is not None:
            texts = [query_texts] if isinstance(query_texts, str) else list(query_texts)
            vectors = self._embed(texts, "query_texts", query=True)
        else:
            vectors = _rows(query_embeddings)
        columns: dict[str, list[Any]] = {key: [] for key in ("ids", *QUERY_INCLUDABLE)}
        for vector in vectors:
            if self._client.pending(self.name):
                ids_, documents, metadatas, distances, uris = [], [], [], [], []
            else:
                among = None if ids is None else ([ids] if isinstance(ids, str) else list(ids))
                found = self._db.search(self.name, vector, n_results, where, where_document, among)
                ids_, documents, metadatas = found.ids, found.documents, found.metadatas
                distances, uris = found.distances, found.uris
            columns["ids"].append(list(ids_))
            columns["documents"].append(list(documents))
            columns["metadatas"].append([_metadata(m, u) for m, u in zip(metadatas, uris, strict=True)])
            columns["distances"].append([float(d) for d in distances])
            columns["uris"].append(list(uris))
            columns["embeddings"].append(self._vectors(ids_) if "embeddings" in fields else None)
        result: dict[str, Any] = {"ids": columns["ids"], "data": None, "included": list(fields)}
        for key in QUERY_INCLUDABLE:
            result[key] = columns[key] if key in fields else None
        return result

    def _vectors(self, ids: list[str]) -> np.ndarray:
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        found = self._db.get(self.name, ids, include=("embeddings",))
        assert found.embeddings is not None
        return found.embeddings


Client.collection_type = Collection


# --- argument and result shapes ------------------------------------------------------------------------
def _rows(embeddings: Any) -> np.ndarray:
    """One embedding or a list of them, as chromadb accepts, as an (n, dim) array."""
    array = np.asarray(embeddings, dtype=np.float64) if not isinstance(embeddings, np.ndarray) else embeddings
    if array.ndim == 1:
        array = array.reshape(1, -1)
    return array


def _list(values: Any) -> Any:
    """A single document / metadata / uri as chromadb accepts it, as a list of one."""
    if values is None or isinstance(values, list):
        return values
    if isinstance(values, str | Mapping):
        return [values]
    return list(values)


def _include(include: Sequence[str], allowed: Sequence[str], method: str) -> tuple[str, ...]:
    if isinstance(include, str):
        raise ValueError(f"include must be a list such as ['documents'], got the string {include!r}.")
    for item in include:
        if item not in allowed:
            raise ValueError(f"{method} may include {', '.join(allowed)}; {item!r} is not one of them.")
    return tuple(dict.fromkeys(include))


def _get_result(found: GetResult, fields: Sequence[str]) -> dict[str, Any]:
    return {
        "ids": list(found.ids),
        "embeddings": found.embeddings if "embeddings" in fields else None,
        "documents": found.documents if "documents" in fields else None,
        "uris": found.uris if "uris" in fields else None,
        "data": None,
        "metadatas": (
            [_metadata(m, u) for m, u in zip(found.metadatas or [], found.uris or [], strict=True)]
            if "metadatas" in fields
            else None
        ),
        "included": list(fields),
    }


def _metadata(metadata: Mapping[str, Any] | None, uri: str | None) -> dict[str, Any] | None:
    """A record's metadata as chromadb returns it: ``{}`` for a record without metadata that has a uri (Chroma
    keeps the uri among its metadata), None for one with neither."""
    if metadata:
        return dict(metadata)
    return {} if uri is not None else None


def _space(configuration: Mapping[str, Any] | None, metadata: Mapping[str, Any] | None) -> str:
    hnsw = (configuration or {}).get("hnsw") or {}
    space = hnsw.get("space") or (metadata or {}).get("hnsw:space") or DEFAULT_SPACE
    if space not in _SPACES:
        raise ConfigError(f"Unknown distance space {space!r}: use one of {', '.join(_SPACES)}.")
    return str(space)


def _unique(ids: str | Sequence[str]) -> None:
    """chromadb's ``DuplicateIDError`` (a ``ValueError`` too) for an id given twice in one call."""
    if isinstance(ids, str):
        return
    seen: set[Any] = set()
    for rid in ids:
        if rid in seen:
            from runbook_lib.chroma.errors import DuplicateIDError

            raise DuplicateIDError(f"ids must be unique within one call; {rid!r} appears more than once.")
        seen.add(rid)


def _no_images(images: Any) -> None:
    if images is not None:
        raise ConfigError("images are not supported by this client: pass embeddings (and uris) instead.")


def _no_data_loader(data_loader: Any) -> None:
    if data_loader is not None:
        raise ConfigError("data_loader is not supported by this client: load the data in the app and pass embeddings.")

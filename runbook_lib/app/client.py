"""The application's vector store after cutover: one client, Qdrant or ChromaDB, chosen by ``VECTOR_DB``.

The migration guide tells users to swap their app's ``vector_db.py`` for this wrapper and, if anything
goes wrong, to set ``VECTOR_DB=chroma`` to roll back. So both backends answer :meth:`VectorDBClient.search`
with the same :class:`SearchResult`: the original Chroma ids, documents, user metadata, uris and
*Chroma's* distances (Qdrant scores converted with the mapping's rules), ordered nearest first, and the
same ``where`` filter language (Chroma's, translated for Qdrant by :mod:`runbook_lib.core.filters`).

Configuration is the runbook's own environment (:func:`runbook_lib.config.settings.load_settings`) plus
``VECTOR_DB`` = ``qdrant`` (default) or ``chroma``. Connections open lazily, on first use, so an
unreachable server does not stop the app from starting and :meth:`VectorDBClient.health` can report it.
Qdrant's embedded local mode locks ``QDRANT_PATH`` for one client at a time: use the client as a context
manager, or call :meth:`VectorDBClient.close`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import numpy as np
from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from runbook_lib.config.settings import Settings, load_settings
from runbook_lib.core.filters import to_qdrant_filter
from runbook_lib.core.mapping import (
    PAYLOAD_DOCUMENT_KEY,
    PAYLOAD_ID_KEY,
    PAYLOAD_METADATA_KEY,
    PAYLOAD_URI_KEY,
    QDRANT_TO_CHROMA_SPACE,
    qdrant_score_to_chroma_distance,
)
from runbook_lib.errors import ConfigError, DimensionMismatchError, RunbookError, SourceError, TargetError
from runbook_lib.target.qdrant import QdrantTarget, connect

log = logging.getLogger(__name__)

Backend = Literal["qdrant", "chroma"]
BACKENDS: tuple[Backend, ...] = ("qdrant", "chroma")
VECTOR_DB_VARIABLE = "VECTOR_DB"
DEFAULT_BACKEND: Backend = "qdrant"

#: Seconds a :meth:`VectorDBClient.health` probe of a server may take before it reports "unreachable".
DEFAULT_HEALTH_TIMEOUT_S = 3.0

_CHROMA_INCLUDE = ["documents", "metadatas", "distances", "uris"]
_T = TypeVar("_T")


class UnknownCollectionError(RunbookError):
    """The collection asked for does not exist in the backend in use."""

    exit_code = 2

    def __init__(self, collection: str, backend_description: str) -> None:
        super().__init__(
            f"Collection {collection!r} does not exist in {backend_description}: check the collection name, "
            "and that the migration has run against this backend.",
            collection=collection,
            backend=backend_description,
        )


class QueryDimensionMismatchError(DimensionMismatchError):
    """A query vector's dimension differs from the collection's (the guide's "Vector dimension mismatch")."""

    def __init__(self, collection: str, expected: int, found: int) -> None:
        super().__init__(collection, expected, found)
        self.message = (
            f"The query vector for collection {collection!r} has dimension {found}, expected {expected}: "
            "embed queries with the same model (and dimension) that produced the collection's vectors."
        )
        self.args = (self.message,)


@dataclass(frozen=True)
class SearchResult:
    """Nearest neighbours of one query, nearest first, in Chroma's conventions for both backends."""

    ids: list[str] = field(default_factory=list)
    documents: list[str | None] = field(default_factory=list)
    metadatas: list[dict[str, Any]] = field(default_factory=list)
    distances: list[float] = field(default_factory=list)
    uris: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class _CollectionInfo:
    dimension: int | None
    space: str | None  # Chroma space of a Qdrant collection; None for Chroma (its own distances)


def backend_from_env(env: Mapping[str, str]) -> Backend:
    """``VECTOR_DB`` (``qdrant`` or ``chroma``, any case; unset or empty means ``qdrant``)."""
    raw = env.get(VECTOR_DB_VARIABLE)
    value = (raw or "").strip().lower()
    if value == "":
        return DEFAULT_BACKEND
    if value == "qdrant":
        return "qdrant"
    if value == "chroma":
        return "chroma"
    raise ConfigError(
        f"{VECTOR_DB_VARIABLE}={raw!r} is not a vector database this app can use: set {VECTOR_DB_VARIABLE} "
        "to qdrant (after the migration) or chroma (to roll back)."
    )


class VectorDBClient:
    """Search Qdrant or ChromaDB, chosen by ``VECTOR_DB``, with the same results and filters.

    ``env`` defaults to ``os.environ``. Construction validates the settings (a bad setting raises
    :class:`ConfigError` at once) but connects to nothing; the first :meth:`search` or :meth:`health`
    does. Thread-safe for concurrent searches once connected.
    """

    def __init__(self, env: Mapping[str, str] | None = None, *, health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S):
        env = os.environ if env is None else env
        self.backend: Backend = backend_from_env(env)
        self.settings: Settings = load_settings(env)
        if health_timeout_s <= 0:
            raise ValueError("health_timeout_s must be greater than zero")
        self.health_timeout_s = float(health_timeout_s)
        self._lock = threading.RLock()
        self._closed = False
        self._qdrant: QdrantTarget | None = None
        self._chroma: Any = None  # chromadb.api.ClientAPI
        self._chroma_collections: dict[str, Any] = {}
        self._info: dict[str, _CollectionInfo] = {}

    # --- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> VectorDBClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection (and the lock on ``QDRANT_PATH`` in local mode). Idempotent."""
        with self._lock:
            self._closed = True
            qdrant, self._qdrant = self._qdrant, None
            chroma, self._chroma = self._chroma, None
            self._chroma_collections.clear()
            self._info.clear()
        if qdrant is not None:
            qdrant.close()
        if chroma is not None:
            _close_chroma(chroma)

    @property
    def closed(self) -> bool:
        return self._closed

    def describe(self) -> str:
        """Where searches go, e.g. ``Qdrant server https://...`` (no secrets)."""
        if self.backend == "qdrant":
            return self.settings.qdrant.describe()
        return self.settings.chroma.describe()

    def __repr__(self) -> str:
        return f"VectorDBClient(backend={self.backend!r}, {self.describe()})"

    # --- search --------------------------------------------------------------------------------
    def search(
        self,
        collection: str,
        vector: Sequence[float] | np.ndarray,
        limit: int = 10,
        where: Mapping[str, Any] | None = None,
    ) -> SearchResult:
        """The ``limit`` records of ``collection`` nearest to ``vector`` that match ``where``.

        Raises :class:`UnknownCollectionError` for a collection the backend does not have,
        :class:`QueryDimensionMismatchError` (a :class:`DimensionMismatchError`) for a vector of the
        wrong dimension, :class:`ConfigError` for a filter Chroma's language does not allow, and
        another :class:`RunbookError` when the backend cannot be reached or fails.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        query = _query_vector(vector)
        # One validation for both backends, so a filter behaves the same before and after a rollback.
        qdrant_filter = to_qdrant_filter(where) if where else None
        if self.backend == "qdrant":
            return self._search_qdrant(collection, query, limit, qdrant_filter)
        return self._search_chroma(collection, query, limit, dict(where) if where else None)

    def _check_dimension(self, collection: str, info: _CollectionInfo, query: list[float]) -> None:
        if info.dimension is not None and info.dimension != len(query):
            raise QueryDimensionMismatchError(collection, info.dimension, len(query))

    # --- Qdrant --------------------------------------------------------------------------------
    def _search_qdrant(
        self, collection: str, query: list[float], limit: int, qdrant_filter: models.Filter | None
    ) -> SearchResult:
        target = self._qdrant_target()
        info = self._qdrant_info(target, collection)
        self._check_dimension(collection, info, query)
        try:
            points = target.query(collection, query, limit=limit, query_filter=qdrant_filter, with_payload=True)
        except TargetError as exc:
            if exc.__cause__ is not None and _is_not_found(exc.__cause__):
                self._forget(collection)  # deleted since it was described
                raise UnknownCollectionError(collection, target.describe()) from exc
            raise
        space = info.space or "l2"
        rows = []
        for point in points:
            payload = point.payload or {}
            distance = float(qdrant_score_to_chroma_distance(float(point.score), space))
            rows.append(
                (
                    distance,
                    str(payload.get(PAYLOAD_ID_KEY, point.id)),
                    payload.get(PAYLOAD_DOCUMENT_KEY),
                    dict(payload.get(PAYLOAD_METADATA_KEY) or {}),
                    payload.get(PAYLOAD_URI_KEY),
                )
            )
        rows.sort(key=lambda row: row[0])  # stable: Qdrant's order is kept for equal distances
        return SearchResult(
            ids=[r[1] for r in rows],
            documents=[r[2] for r in rows],
            metadatas=[r[3] for r in rows],
            distances=[r[0] for r in rows],
            uris=[r[4] for r in rows],
        )

    def _qdrant_target(self) -> QdrantTarget:
        with self._lock:
            self._ensure_open()
            if self._qdrant is None:
                qs = self.settings.qdrant
                if not qs.is_server and not qs.path.is_dir():
                    raise ConfigError(
                        f"QDRANT_PATH points to {qs.path}, which does not exist: point QDRANT_PATH at the "
                        "directory the migration wrote, or set QDRANT_URL to use a Qdrant server."
                    )
                self._qdrant = QdrantTarget(qs)  # connect(settings.qdrant); ConfigError when unreachable
            return self._qdrant

    def _qdrant_info(self, target: QdrantTarget, collection: str) -> _CollectionInfo:
        cached = self._info.get(collection)
        if cached is not None:
            return cached
        try:
            described = target.client.get_collection(collection)
        except Exception as exc:
            if _is_not_found(exc):
                raise UnknownCollectionError(collection, target.describe()) from exc
            raise TargetError(
                f"Qdrant could not describe collection {collection!r} at {target.describe()}: {_short(exc)}"
            ) from exc
        params = described.config.params.vectors
        if not isinstance(params, models.VectorParams):
            raise TargetError(
                f"Qdrant collection {collection!r} uses named vectors, not the one unnamed vector per point "
                "the migration writes: query it with qdrant-client directly."
            )
        distance = params.distance.value if hasattr(params.distance, "value") else str(params.distance)
        space = QDRANT_TO_CHROMA_SPACE.get(distance)
        if space is None:
            raise TargetError(
                f"Qdrant collection {collection!r} uses {distance} distance, which has no ChromaDB equivalent: "
                "the migration creates Cosine, Euclid or Dot collections."
            )
        info = _CollectionInfo(dimension=int(params.size), space=space)
        with self._lock:
            self._info[collection] = info
        return info

    # --- ChromaDB ------------------------------------------------------------------------------
    def _search_chroma(
        self, collection: str, query: list[float], limit: int, where: dict[str, Any] | None
    ) -> SearchResult:
        for attempt in (1, 2):
            col = self._chroma_collection(collection)
            info = self._chroma_info(collection, col)
            self._check_dimension(collection, info, query)
            try:
                response = col.query(query_embeddings=[query], n_results=limit, where=where, include=_CHROMA_INCLUDE)
            except Exception as exc:
                if _is_chroma_not_found(exc):
                    # The collection was deleted (or recreated) since it was cached: look it up again once.
                    self._forget(collection)
                    if attempt == 1:
                        continue
                    raise UnknownCollectionError(collection, self.settings.chroma.describe()) from exc
                raise SourceError(
                    f"ChromaDB could not search collection {collection!r} at {self.settings.chroma.describe()}: "
                    f"{_short(exc)}"
                ) from exc
            return _chroma_result(response)
        raise AssertionError("unreachable")  # pragma: no cover

    def _chroma_client(self) -> Any:
        with self._lock:
            self._ensure_open()
            if self._chroma is None:
                self._chroma = _open_chroma(self.settings)
            return self._chroma

    def _chroma_collection(self, collection: str) -> Any:
        cached = self._chroma_collections.get(collection)
        if cached is not None:
            return cached
        client = self._chroma_client()
        try:
            col = client.get_collection(collection)  # never create: the app's data must already be there
        except Exception as exc:
            if _is_chroma_not_found(exc):
                raise UnknownCollectionError(collection, self.settings.chroma.describe()) from exc
            raise SourceError(
                f"ChromaDB could not open collection {collection!r} at {self.settings.chroma.describe()}: {_short(exc)}"
            ) from exc
        with self._lock:
            self._chroma_collections[collection] = col
        return col

    def _chroma_info(self, collection: str, col: Any) -> _CollectionInfo:
        cached = self._info.get(collection)
        if cached is not None:
            return cached
        try:
            sample = col.get(limit=1, include=["embeddings"])
        except Exception as exc:
            raise SourceError(
                f"ChromaDB could not read collection {collection!r} at {self.settings.chroma.describe()}: {_short(exc)}"
            ) from exc
        embeddings = sample.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            return _CollectionInfo(dimension=None, space=None)  # empty: nothing to check, nothing cached
        info = _CollectionInfo(dimension=len(embeddings[0]), space=None)
        with self._lock:
            self._info[collection] = info
        return info

    def _forget(self, collection: str) -> None:
        with self._lock:
            self._chroma_collections.pop(collection, None)
            self._info.pop(collection, None)

    def _ensure_open(self) -> None:
        if self._closed:
            raise RunbookError(
                f"This VectorDBClient ({self.describe()}) is closed: create a new one (closing releases the "
                "connection and, in Qdrant's local mode, the lock on QDRANT_PATH)."
            )

    # --- health --------------------------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """Probe the backend by listing its collections. Never raises; bounded in time for servers.

        Returns ``{"backend", "reachable", "collections", "latency_ms", "error"}``: ``collections`` is the
        number of collections, ``latency_ms`` the time the listing took, ``error`` one sentence or None.
        """
        report: dict[str, Any] = {
            "backend": self.backend,
            "reachable": False,
            "collections": None,
            "latency_ms": None,
            "error": None,
        }
        is_server = self.settings.qdrant.is_server if self.backend == "qdrant" else self.settings.chroma.is_server
        try:
            if is_server:
                # A fresh client with a short timeout, in a thread with a hard deadline: a server that
                # drops packets must not hang the caller (chromadb's HTTP client has no timeout at all).
                count, seconds = _run_with_deadline(self._probe_server, self.health_timeout_s + 2.0)
            else:
                count, seconds = self._probe_local()
        except TimeoutError:
            report["error"] = f"{self.describe()} did not answer within {self.health_timeout_s + 2.0:g} s."
        except Exception as exc:
            report["error"] = _short(exc)
        else:
            report.update(reachable=True, collections=count, latency_ms=round(seconds * 1000.0, 3))
        return report

    def _probe_local(self) -> tuple[int, float]:
        if self.backend == "qdrant":
            client = self._qdrant_target().client
            started = time.perf_counter()
            count = len(client.get_collections().collections)
        else:
            chroma = self._chroma_client()
            started = time.perf_counter()
            count = int(chroma.count_collections())
        return count, time.perf_counter() - started

    def _probe_server(self) -> tuple[int, float]:
        if self.backend == "qdrant":
            timeout = max(1, math.ceil(self.health_timeout_s))
            client = connect(dataclasses.replace(self.settings.qdrant, timeout_s=float(timeout)))
            try:
                started = time.perf_counter()
                count = len(client.get_collections().collections)
                return count, time.perf_counter() - started
            finally:
                client.close()
        chroma = _open_chroma(self.settings)
        try:
            started = time.perf_counter()
            count = int(chroma.count_collections())
            return count, time.perf_counter() - started
        finally:
            _close_chroma(chroma)


# --- helpers -------------------------------------------------------------------------------------
def _query_vector(vector: Sequence[float] | np.ndarray) -> list[float]:
    try:
        array = np.asarray(vector, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the query vector must be a sequence of numbers: {exc}") from None
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"the query vector must be one non-empty list of numbers, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError("the query vector contains NaN or infinity")
    return [float(x) for x in array]


def _chroma_result(response: Mapping[str, Any]) -> SearchResult:
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


def _open_chroma(settings: Settings) -> Any:
    """Open the app's ChromaDB the way the app does: PersistentClient(path) or HttpClient(...)."""
    import chromadb
    from chromadb.config import DEFAULT_DATABASE, DEFAULT_TENANT

    cs = settings.chroma
    tenant = cs.tenant or DEFAULT_TENANT
    database = cs.database or DEFAULT_DATABASE
    if not cs.is_server:
        path = cs.require_persist_dir()
        try:
            return chromadb.PersistentClient(path=str(path), tenant=tenant, database=database)
        except Exception as exc:
            raise SourceError(f"Cannot open the ChromaDB directory {path}: {_short(exc)}") from exc
    kwargs: dict[str, Any] = {}
    if cs.auth_token:
        from chromadb.config import Settings as ChromaConfig

        kwargs["settings"] = ChromaConfig(
            chroma_client_auth_provider="chromadb.auth.token_authn.TokenAuthClientProvider",
            chroma_client_auth_credentials=cs.auth_token,
        )
    try:
        return chromadb.HttpClient(
            host=str(cs.host), port=cs.port, ssl=cs.ssl, tenant=tenant, database=database, **kwargs
        )
    except Exception as exc:
        raise SourceError(
            f"Cannot reach the {cs.describe()} ({_short(exc)}): check CHROMA_HOST, CHROMA_PORT, CHROMA_SSL and "
            "CHROMA_AUTH_TOKEN, and that the server is running."
        ) from exc


def _close_chroma(client: Any) -> None:
    close = getattr(client, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # pragma: no cover - closing never hides the real error
            log.debug("closing the ChromaDB client failed", exc_info=True)


def _is_not_found(exc: BaseException) -> bool:
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code == 404
    return isinstance(exc, ValueError) and "not found" in str(exc).lower()


def _is_chroma_not_found(exc: BaseException) -> bool:
    from chromadb.errors import NotFoundError

    if isinstance(exc, NotFoundError):
        return True
    text = str(exc).lower()
    return "does not exist" in text and "collection" in text


def _run_with_deadline(fn: Callable[[], _T], seconds: float) -> _T:
    """Run ``fn`` in a daemon thread; raise :class:`TimeoutError` if it has not returned in ``seconds``.

    The thread is left to finish on its own (its client has its own timeout where the library allows).
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def runner() -> None:
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=runner, name="vector-db-health", daemon=True).start()
    if not done.wait(seconds):
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:400]

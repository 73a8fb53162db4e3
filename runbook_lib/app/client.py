"""The application's vector store after cutover: one client, Qdrant or ChromaDB, chosen by ``VECTOR_DB``.

The migration guide tells users to swap their app's ``vector_db.py`` for this wrapper and, if anything
goes wrong, to set ``VECTOR_DB=chroma`` to roll back. So both backends answer :meth:`VectorDBClient.search`
with the same :class:`SearchResult`: the original Chroma ids, documents, user metadata, uris and
*Chroma's* distances (Qdrant scores converted with the mapping's rules), ordered nearest first, and the
same ``where`` filter language (Chroma's, translated for Qdrant by :mod:`runbook_lib.core.filters`).

Configuration is the runbook's own environment (:func:`runbook_lib.config.settings.load_settings`) plus
``VECTOR_DB`` = ``qdrant`` (default), ``chroma`` or ``dual`` (writes to both, reads from ``VECTOR_DB_READ``, what
the second store misses journaled in ``VECTOR_DB_JOURNAL``: :mod:`~runbook_lib.app.dual`). Chroma-shaped writes
and reads by id (``add``, ``upsert``, ``update``, ``delete``, ``get``, ``count``) come from
:class:`~runbook_lib.app.writes.WriteMethods`. Connections open lazily, on first use, so an
unreachable server does not stop the app from starting and :meth:`VectorDBClient.health` can report it.
Qdrant's embedded local mode locks ``QDRANT_PATH`` for one client at a time: use the client as a context
manager, or call :meth:`VectorDBClient.close`.

The backends live in :mod:`~runbook_lib.app.qdrant_backend` and :mod:`~runbook_lib.app.chroma_backend`.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar

import numpy as np
from qdrant_client import models

from runbook_lib.app.chroma_backend import ChromaBackend
from runbook_lib.app.dual import DualWriter, journal_path_from_env, read_store_from_env, secondary_deadline_from_env
from runbook_lib.app.errors import QueryDimensionMismatchError, UnknownCollectionError, short_error
from runbook_lib.app.journal import Journal
from runbook_lib.app.metrics import AppMetrics, default_metrics, measured, serve_from_env
from runbook_lib.app.qdrant_backend import QdrantBackend
from runbook_lib.app.results import SearchResult, query_vector
from runbook_lib.app.writes import WriteMethods
from runbook_lib.config.settings import Settings, load_settings
from runbook_lib.core.document_filters import validate_where_document
from runbook_lib.core.filters import to_qdrant_filter
from runbook_lib.core.layouts import LAYOUT_NAMES, Layout, get_layout
from runbook_lib.core.mapping import point_id
from runbook_lib.errors import ConfigError

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_HEALTH_TIMEOUT_S",
    "VECTOR_DB_VARIABLE",
    "Backend",
    "QueryDimensionMismatchError",
    "SearchResult",
    "UnknownCollectionError",
    "VectorDBClient",
    "backend_from_env",
]

Backend = Literal["qdrant", "chroma", "dual"]
BACKENDS: tuple[Backend, ...] = ("qdrant", "chroma", "dual")
VECTOR_DB_VARIABLE = "VECTOR_DB"
PAYLOAD_LAYOUT_VARIABLE = "VECTOR_DB_PAYLOAD_LAYOUT"
DEFAULT_BACKEND: Backend = "qdrant"

#: Seconds a :meth:`VectorDBClient.health` probe of a server may take before it reports "unreachable".
DEFAULT_HEALTH_TIMEOUT_S = 3.0

_T = TypeVar("_T")


def layout_from_env(env: Mapping[str, str]) -> Layout:
    """``VECTOR_DB_PAYLOAD_LAYOUT``: the payload layout the collections were migrated with (``runbook``, the
    default, ``langchain`` or ``llamaindex``: the run's ``payload_layout``)."""
    raw = (env.get(PAYLOAD_LAYOUT_VARIABLE) or "").strip().lower()
    try:
        return get_layout(raw or None)
    except ConfigError:
        raise ConfigError(
            f"{PAYLOAD_LAYOUT_VARIABLE}={raw!r} is not a payload layout: set it to the run's payload_layout "
            f"({', '.join(LAYOUT_NAMES)}), or unset it for the default (runbook)."
        ) from None


def backend_from_env(env: Mapping[str, str]) -> Backend:
    """``VECTOR_DB`` (``qdrant``, ``chroma`` or ``dual``, any case; unset or empty means ``qdrant``)."""
    raw = env.get(VECTOR_DB_VARIABLE)
    value = (raw or "").strip().lower()
    if value == "":
        return DEFAULT_BACKEND
    if value == "qdrant":
        return "qdrant"
    if value == "chroma":
        return "chroma"
    if value == "dual":
        return "dual"
    raise ConfigError(
        f"{VECTOR_DB_VARIABLE}={raw!r} is not a vector database this app can use: set {VECTOR_DB_VARIABLE} "
        "to qdrant (after the migration), chroma (to roll back) or dual (write to both during the cutover)."
    )


class VectorDBClient(WriteMethods):
    """Search Qdrant or ChromaDB, chosen by ``VECTOR_DB``, with the same results and filters.

    ``env`` defaults to ``os.environ``. Construction validates the settings (a bad setting raises
    :class:`ConfigError` at once) but connects to nothing; the first :meth:`search` or :meth:`health`
    does. Thread-safe for concurrent searches once connected.
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        *,
        health_timeout_s: float = DEFAULT_HEALTH_TIMEOUT_S,
        metrics: AppMetrics | None = None,
    ):
        env = os.environ if env is None else env
        self.backend: Backend = backend_from_env(env)
        self.settings: Settings = load_settings(env)
        layout = layout_from_env(env)
        if health_timeout_s <= 0:
            raise ValueError("health_timeout_s must be greater than zero")
        self.health_timeout_s = float(health_timeout_s)
        self.journal = Journal(journal_path_from_env(env, self.settings))
        self._dual: DualWriter | None = None
        self._secondary: QdrantBackend | ChromaBackend | None = None
        if self.backend == "dual":
            self.read_from = read_store_from_env(env)
            chroma, qdrant = ChromaBackend(self.settings.chroma), QdrantBackend(self.settings.qdrant, layout)
            primary, self._secondary = (chroma, qdrant) if self.read_from == "chroma" else (qdrant, chroma)
            self._store = primary
            self._dual = DualWriter(
                primary,
                self._secondary,
                primary_name=self.read_from,
                secondary_name="qdrant" if self.read_from == "chroma" else "chroma",
                journal=self.journal,
                secrets=self.settings.secrets(),
                deadline_s=secondary_deadline_from_env(env),
            )
        else:
            self.read_from = self.backend
            self._store = (
                QdrantBackend(self.settings.qdrant, layout)
                if self.backend == "qdrant"
                else ChromaBackend(self.settings.chroma)
            )
        # Prometheus metrics (runbook_lib.app.metrics): no-ops without prometheus-client; exposed only on request.
        self.metrics = metrics if metrics is not None else default_metrics()
        self.metrics.set_live_backend(self.read_from)
        serve_from_env(env, self.metrics)

    # --- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> VectorDBClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the connection (and the lock on ``QDRANT_PATH`` in local mode). Idempotent."""
        self._store.close()
        if self._secondary is not None:
            if self._dual is not None:  # a secondary hung past its write deadline is not waited for
                self._dual.close_secondary(self._secondary.close)
            else:
                self._secondary.close()

    @property
    def closed(self) -> bool:
        return self._store.closed

    def describe(self) -> str:
        """Where searches go, e.g. ``Qdrant server https://...`` (no secrets)."""
        return self._store.describe()

    def __repr__(self) -> str:
        return f"VectorDBClient(backend={self.backend!r}, {self.describe()})"

    # --- search --------------------------------------------------------------------------------
    @measured("search")
    def search(
        self,
        collection: str,
        vector: Sequence[float] | np.ndarray,
        limit: int = 10,
        where: Mapping[str, Any] | None = None,
        where_document: Mapping[str, Any] | None = None,
        ids: Sequence[str] | None = None,
    ) -> SearchResult:
        """The ``limit`` records of ``collection`` nearest to ``vector`` that match ``where`` and ``where_document``
        (Chroma answers it natively; for Qdrant the records it matches exactly are found first, then searched),
        among ``ids`` when given (Qdrant only: chromadb's ``query(ids=...)``).

        Raises :class:`UnknownCollectionError` for a collection the backend does not have,
        :class:`QueryDimensionMismatchError` (a :class:`DimensionMismatchError`) for a vector of the
        wrong dimension, :class:`ConfigError` for a filter Chroma's language does not allow, and
        another :class:`RunbookError` when the backend cannot be reached or fails.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        query = query_vector(vector)
        # One validation for both backends, so a filter behaves the same before and after a rollback.
        flat = isinstance(self._store, QdrantBackend) and self._store.layout.flat
        qdrant_filter = to_qdrant_filter(where, flat=flat) if where else None
        if where_document:
            validate_where_document(where_document)
        if isinstance(self._store, QdrantBackend):
            among = None if ids is None else list(dict.fromkeys(ids))
            if where_document:
                found = self.get(collection, ids=among or None, where=where, include=(), where_document=where_document)
                qdrant_filter = with_ids(qdrant_filter, found.ids if among != [] else [])  # none: dimension checked
            elif among is not None:
                qdrant_filter = with_ids(qdrant_filter, among)
            return self._store.search(collection, query, limit, qdrant_filter)
        if ids is not None:
            raise ConfigError(
                "Searching among given ids is answered over Qdrant only: with VECTOR_DB=chroma, query Chroma's own "
                "client with ids=, or narrow the search with where."
            )
        return self._store.search(
            collection, query, limit, dict(where) if where else None, dict(where_document) if where_document else None
        )

    # --- collections ---------------------------------------------------------------------------
    def collection_names(self) -> list[str]:
        """The collections of the store reads come from, sorted."""
        return self._store.collection_names()

    def create_collection(self, collection: str, space: str, dimension: int) -> None:
        """Create an empty collection (in both stores under ``VECTOR_DB=dual``) as the migration would:
        ``space`` is Chroma's (``l2``, ``cosine``, ``ip``), ``dimension`` its vectors'."""
        for store in (self._store, self._secondary):
            if store is not None:
                store.create_collection(collection, space, dimension)

    def delete_collection(self, collection: str) -> None:
        """Delete a collection and its records (from both stores under ``VECTOR_DB=dual``)."""
        for store in (self._store, self._secondary):
            if store is not None:
                store.delete_collection(collection)

    # --- health --------------------------------------------------------------------------------
    @measured("health")
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
        try:
            if self._store.settings.is_server:
                # A fresh client with a short timeout, in a thread with a hard deadline: a server that
                # drops packets must not hang the caller (chromadb's HTTP client has no timeout at all).
                count, seconds = _run_with_deadline(
                    lambda: self._store.probe_server(self.health_timeout_s), self.health_timeout_s + 2.0
                )
            else:
                count, seconds = self._store.probe_local()
        except TimeoutError:
            report["error"] = f"{self.describe()} did not answer within {self.health_timeout_s + 2.0:g} s."
        except Exception as exc:
            report["error"] = short_error(exc)
        else:
            report.update(reachable=True, collections=count, latency_ms=round(seconds * 1000.0, 3))
        return report


def with_ids(qdrant_filter: models.Filter | None, chroma_ids: Sequence[str]) -> models.Filter:
    """``qdrant_filter`` narrowed to the points of these Chroma ids."""
    has_ids = models.HasIdCondition(has_id=[point_id(i) for i in chroma_ids])
    return models.Filter(must=[has_ids] if qdrant_filter is None else [qdrant_filter, has_ids])


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

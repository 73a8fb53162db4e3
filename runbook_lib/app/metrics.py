"""Prometheus metrics of :class:`~runbook_lib.app.client.VectorDBClient`: what the cutover dashboard shows.

Every call the wrapper makes is measured per backend (``qdrant`` / ``chroma``), collection and operation
(``search``, ``health``, and the write operations as they are added):

=====================================================  =============================================================
``vector_db_request_duration_seconds`` (histogram)     latency of every call, failed ones included; its ``_count`` is
                                                       the number of calls (queries per second in the dashboard)
``vector_db_errors_total`` (counter)                   failed calls by ``kind`` (:func:`error_kind`)
``vector_db_in_flight_requests`` (gauge)               calls running now, per backend and operation
``vector_db_live_backend`` (gauge)                     1 for the backend ``VECTOR_DB`` chose, 0 for the other
``vector_db_dual_write_backlog`` (gauge)               dual-write journal entries not yet applied to ``target``
=====================================================  =============================================================

The metrics live in the app's own registry (:func:`metrics_registry`), never prometheus-client's global one, so
importing this module registers nothing. Exposing them is opt-in: add :func:`metrics_registry` to the app's own
``/metrics`` (or mount :func:`asgi_app` in a FastAPI/Starlette app), or set ``VECTOR_DB_METRICS_PORT`` and the
first :class:`VectorDBClient` serves them on that port (``VECTOR_DB_METRICS_ADDR``, default all interfaces).

prometheus-client is the ``metrics`` extra (``pip install 'runbook-lib[metrics]'``). Without it every metric is a
no-op and the app layer works as before; only asking for an exposure (the port, the ASGI app) says it is missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import wraps
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from runbook_lib.app.errors import QueryDimensionMismatchError, UnknownCollectionError
from runbook_lib.errors import ConfigError, DimensionMismatchError, SourceError, TargetError

try:
    import prometheus_client
except ImportError:  # the `metrics` extra is not installed: everything below is a no-op
    prometheus_client = None

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "BACKENDS_MEASURED",
    "LATENCY_BUCKETS_S",
    "METRICS_ADDR_VARIABLE",
    "METRICS_PORT_VARIABLE",
    "AppMetrics",
    "Call",
    "asgi_app",
    "available",
    "default_metrics",
    "error_kind",
    "measured",
    "metrics_registry",
    "serve_from_env",
]

METRICS_PORT_VARIABLE = "VECTOR_DB_METRICS_PORT"
METRICS_ADDR_VARIABLE = "VECTOR_DB_METRICS_ADDR"
BACKENDS_MEASURED = ("qdrant", "chroma")
#: Seconds. Fine below 100 ms, where vector searches live, so p95 is resolved to a few milliseconds there.
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

P = ParamSpec("P")
R = TypeVar("R")


def available() -> bool:
    """Whether prometheus-client is installed (the ``metrics`` extra)."""
    return prometheus_client is not None


def error_kind(exc: BaseException) -> str:
    """The ``kind`` label of a failed call: a short fixed vocabulary, never the message."""
    if isinstance(exc, UnknownCollectionError):
        return "unknown_collection"
    if isinstance(exc, QueryDimensionMismatchError | DimensionMismatchError):
        return "dimension_mismatch"
    if isinstance(exc, ConfigError):
        return "invalid_request"  # a filter outside Chroma's language, a bad setting
    if isinstance(exc, ValueError | TypeError):
        return "invalid_request"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, SourceError | TargetError | ConnectionError | OSError):
        return "backend"
    return "other"


class Call:
    """One measured call, as the ``with metrics.track(...) as call`` block sees it."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: str | None = None

    def fail(self, kind: str) -> None:
        """Count this call as failed with ``kind`` although it did not raise (e.g. a health probe's report)."""
        self.error = kind


class AppMetrics:
    """The wrapper's metrics in one registry (a new one unless ``registry`` is given); no-ops without
    prometheus-client."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.enabled = prometheus_client is not None
        self.registry: CollectorRegistry | None = None
        if prometheus_client is None:
            return
        self.registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        pc = prometheus_client
        self.latency = pc.Histogram(
            "vector_db_request_duration_seconds",
            "Latency of VectorDBClient calls, failed ones included.",
            ["backend", "collection", "operation"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.errors = pc.Counter(
            "vector_db_errors",
            "Failed VectorDBClient calls, by kind.",
            ["backend", "collection", "operation", "kind"],
            registry=self.registry,
        )
        self.in_flight = pc.Gauge(
            "vector_db_in_flight_requests",
            "VectorDBClient calls running now.",
            ["backend", "operation"],
            registry=self.registry,
        )
        self.live_backend = pc.Gauge(
            "vector_db_live_backend",
            "1 for the backend the app uses (VECTOR_DB), 0 for the other.",
            ["backend"],
            registry=self.registry,
        )
        self.journal_backlog = pc.Gauge(
            "vector_db_dual_write_backlog",
            "Dual-write journal entries not yet applied to the target backend.",
            ["target"],
            registry=self.registry,
        )

    @contextmanager
    def track(self, backend: str, collection: str, operation: str) -> Iterator[Call]:
        """Measure the block as one call: in flight while it runs, its latency, and its error kind if it raises
        (the exception propagates) or calls :meth:`Call.fail`."""
        call = Call()
        if not self.enabled:
            yield call
            return
        in_flight = self.in_flight.labels(backend, operation)
        in_flight.inc()
        start = time.perf_counter()
        try:
            yield call
        except BaseException as exc:
            call.error = error_kind(exc)
            raise
        finally:
            self.latency.labels(backend, collection, operation).observe(time.perf_counter() - start)
            in_flight.dec()
            if call.error is not None:
                self.errors.labels(backend, collection, operation, call.error).inc()

    def set_live_backend(self, backend: str) -> None:
        """Mark ``backend`` as the one the app uses (1) and every other as not (0)."""
        if not self.enabled:
            return
        for name in {*BACKENDS_MEASURED, backend}:
            self.live_backend.labels(name).set(1 if name == backend else 0)

    def set_journal_backlog(self, pending: int, target: str) -> None:
        """The dual-write journal's backlog: entries written to the primary, not yet applied to ``target``."""
        if self.enabled:
            self.journal_backlog.labels(target).set(max(0, int(pending)))


_default_lock = threading.Lock()
_default: AppMetrics | None = None
_served: dict[tuple[str, int], Any] = {}


def default_metrics() -> AppMetrics:
    """The process's :class:`AppMetrics`, which every :class:`VectorDBClient` uses unless given its own."""
    global _default
    with _default_lock:
        if _default is None:
            _default = AppMetrics()
        return _default


def metrics_registry() -> CollectorRegistry | None:
    """The registry of :func:`default_metrics` (None without prometheus-client): add it to the app's own
    exposition, e.g. ``generate_latest(metrics_registry())``."""
    return default_metrics().registry


def _require(what: str) -> Any:
    if prometheus_client is None:
        raise ConfigError(
            f"{what} needs prometheus-client, which is not installed: pip install 'runbook-lib[metrics]'."
        )
    return prometheus_client


def asgi_app(metrics: AppMetrics | None = None) -> Callable[..., Any]:
    """An ASGI app serving the metrics (``app.mount("/metrics", asgi_app())`` in FastAPI/Starlette)."""
    pc = _require("The metrics ASGI app")
    return pc.make_asgi_app(registry=(metrics or default_metrics()).registry)


def serve_from_env(env: Mapping[str, str], metrics: AppMetrics | None = None) -> int | None:
    """If ``VECTOR_DB_METRICS_PORT`` is set, serve the metrics on it (once per address and port in this process);
    the port, or None when the variable is unset or empty."""
    raw = (env.get(METRICS_PORT_VARIABLE) or "").strip()
    if not raw:
        return None
    try:
        port = int(raw)
    except ValueError:
        port = -1
    if not 0 < port < 65536:
        raise ConfigError(
            f"{METRICS_PORT_VARIABLE}={raw!r} is not a TCP port: set it to a port between 1 and 65535 (or leave "
            "it unset to keep the metrics unexposed)."
        )
    pc = _require(f"{METRICS_PORT_VARIABLE}={port}")
    addr = (env.get(METRICS_ADDR_VARIABLE) or "").strip() or "0.0.0.0"
    registry = (metrics or default_metrics()).registry
    with _default_lock:
        if (addr, port) not in _served:
            try:
                _served[(addr, port)] = pc.start_http_server(port, addr=addr, registry=registry)
            except OSError as exc:
                raise ConfigError(
                    f"{METRICS_PORT_VARIABLE}={port} cannot be served on {addr} ({exc.strerror or exc}): choose a "
                    f"free port or set {METRICS_ADDR_VARIABLE}."
                ) from None
    return port


def measured(operation: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Measure a :class:`VectorDBClient` method as ``operation`` with its object's ``metrics``, labelled with the
    backend that serves it (``read_from`` in dual mode, else ``backend``).

    The collection is the method's ``collection`` argument (first positional), else empty. A method that
    returns a report with ``reachable: False`` (``health``) counts as failed, kind ``unreachable``.
    """

    def decorate(method: Callable[P, R]) -> Callable[P, R]:
        @wraps(method)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            client = args[0]
            metrics: AppMetrics | None = getattr(client, "metrics", None)
            if metrics is None or not metrics.enabled:
                return method(*args, **kwargs)
            collection = kwargs.get("collection", args[1] if len(args) > 1 else "")
            backend = getattr(client, "read_from", None) or getattr(client, "backend", "")
            with metrics.track(str(backend), str(collection), operation) as call:
                result = method(*args, **kwargs)
                if isinstance(result, dict) and result.get("reachable") is False:
                    call.fail("unreachable")
                return result

        return wrapper

    return decorate

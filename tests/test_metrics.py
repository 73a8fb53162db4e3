"""The app wrapper's Prometheus metrics (runbook_lib.app.metrics) on real searches of both backends.

Real chromadb persistent directory and Qdrant Edge (the small database, migrated by the runbook's
own migrate step), each test with its own registry; the exposure paths (a port from ``VECTOR_DB_METRICS_PORT``,
the ASGI app) served for real on loopback; and the app layer without prometheus-client, where every metric is a
no-op.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from runbook_lib.app import UnknownCollectionError, VectorDBClient
from runbook_lib.app.metrics import AppMetrics, error_kind, metrics_registry, serve_from_env
from runbook_lib.errors import ConfigError, DimensionMismatchError, TargetError
from runbook_lib.steps.migrate.engine import migrate

from conftest import free_port, make_small_db, run_step_inprocess

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:legacy embedding function config:DeprecationWarning")


@pytest.fixture(scope="module")
def _migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small database migrated once per module by the runbook's migrate step."""
    root = tmp_path_factory.mktemp("metrics_template")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("CHROMA_HOST", "CHROMA_PORT", "CHROMA_DATABASE", "QDRANT_URL", "QDRANT_API_KEY", "QDRANT_PATH"):
            mp.delenv(var, raising=False)
        mp.delenv("VECTOR_DB", raising=False)
        mp.setenv("CHROMA_PERSIST_DIR", str(root / "chroma_db"))
        mp.setenv("QDRANT_EDGE_PATH", str(root / "qdrant"))
        mp.setenv("RUNBOOK_OUTPUTS", str(root / "outputs"))
        mp.setenv("RUNBOOK_PROGRESS", "off")
        make_small_db(root / "chroma_db")
        _, result = run_step_inprocess("migrate", migrate)
        assert result.ok
    return root


@pytest.fixture
def migrated_env(_migrated_template: Path, runbook_env: dict[str, Path]) -> dict[str, str]:
    """``runbook_env`` holding the small database and its migrated copy; the variables the app reads."""
    for name, key in (("chroma_db", "chroma"), ("qdrant", "qdrant")):
        shutil.copytree(_migrated_template / name, runbook_env[key])
    return {k: v for k, v in os.environ.items() if k in ("CHROMA_PERSIST_DIR", "QDRANT_EDGE_PATH", "RUNBOOK_OUTPUTS")}


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    got = registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


@pytest.mark.parametrize("backend", ["qdrant", "chroma"])
def test_searches_and_errors_are_counted_per_backend_collection_and_kind(
    migrated_env: dict[str, str], backend: str
) -> None:
    registry = CollectorRegistry()
    metrics = AppMetrics(registry=registry)
    rng = np.random.default_rng(3)
    with VectorDBClient({**migrated_env, "VECTOR_DB": backend}, metrics=metrics) as client:
        for _ in range(7):
            assert len(client.search("alpha_docs", rng.normal(size=16), limit=3).ids) == 3
        client.search("beta_docs", rng.normal(size=8), limit=2, where={"tag": "t1"})
        with pytest.raises(UnknownCollectionError):
            client.search("no_such_docs", rng.normal(size=16))
        with pytest.raises(DimensionMismatchError):
            client.search("alpha_docs", rng.normal(size=5))
        with pytest.raises(ValueError):
            client.search("alpha_docs", rng.normal(size=16), limit=0)
        assert client.health()["reachable"] is True

    count = "vector_db_request_duration_seconds_count"
    labels = {"backend": backend, "operation": "search"}
    assert _value(registry, count, collection="alpha_docs", **labels) == 9  # 7 ok, 2 failed: every call counts
    assert _value(registry, count, collection="beta_docs", **labels) == 1
    assert _value(registry, count, collection="no_such_docs", **labels) == 1
    errors = "vector_db_errors_total"
    assert _value(registry, errors, collection="no_such_docs", kind="unknown_collection", **labels) == 1
    assert _value(registry, errors, collection="alpha_docs", kind="dimension_mismatch", **labels) == 1
    assert _value(registry, errors, collection="alpha_docs", kind="invalid_request", **labels) == 1
    assert _value(registry, errors, collection="beta_docs", kind="unknown_collection", **labels) == 0
    # Latency is observed in seconds, within the histogram's range.
    total = _value(registry, "vector_db_request_duration_seconds_sum", collection="alpha_docs", **labels)
    assert 0 < total < 60
    inf = _value(registry, "vector_db_request_duration_seconds_bucket", collection="alpha_docs", le="+Inf", **labels)
    assert inf == 9
    # Nothing left in flight; the live backend is the one VECTOR_DB chose; health is measured too.
    assert _value(registry, "vector_db_in_flight_requests", backend=backend, operation="search") == 0
    other = "chroma" if backend == "qdrant" else "qdrant"
    assert _value(registry, "vector_db_live_backend", backend=backend) == 1
    assert _value(registry, "vector_db_live_backend", backend=other) == 0
    assert _value(registry, count, backend=backend, collection="", operation="health") == 1


def test_in_flight_gauge_counts_running_calls_and_errors_propagate() -> None:
    registry = CollectorRegistry()
    metrics = AppMetrics(registry=registry)
    started, release = threading.Event(), threading.Event()

    def slow() -> None:
        with metrics.track("qdrant", "c", "search"):
            started.set()
            release.wait(10)

    threads = [threading.Thread(target=slow) for _ in range(3)]
    for t in threads:
        t.start()
    started.wait(10)
    deadline_value = 0.0
    for _ in range(100):
        deadline_value = _value(registry, "vector_db_in_flight_requests", backend="qdrant", operation="search")
        if deadline_value == 3:
            break
        threading.Event().wait(0.02)
    assert deadline_value == 3
    release.set()
    for t in threads:
        t.join(10)
    assert _value(registry, "vector_db_in_flight_requests", backend="qdrant", operation="search") == 0

    with pytest.raises(TargetError), metrics.track("chroma", "c", "search"):
        raise TargetError("the server is down.")
    assert _value(
        registry, "vector_db_errors_total", backend="chroma", collection="c", operation="search", kind="backend"
    )
    with metrics.track("chroma", "", "health") as call:
        call.fail("unreachable")
    assert _value(
        registry, "vector_db_errors_total", backend="chroma", collection="", operation="health", kind="unreachable"
    )


def test_journal_backlog_and_live_backend_setters() -> None:
    registry = CollectorRegistry()
    metrics = AppMetrics(registry=registry)
    metrics.set_journal_backlog(42, target="chroma")
    assert _value(registry, "vector_db_dual_write_backlog", target="chroma") == 42
    metrics.set_journal_backlog(-1, target="chroma")
    assert _value(registry, "vector_db_dual_write_backlog", target="chroma") == 0
    metrics.set_live_backend("chroma")
    assert _value(registry, "vector_db_live_backend", backend="chroma") == 1
    assert _value(registry, "vector_db_live_backend", backend="qdrant") == 0


def test_error_kinds_are_a_fixed_vocabulary() -> None:
    assert error_kind(UnknownCollectionError("x", "Qdrant")) == "unknown_collection"
    assert error_kind(ConfigError("bad filter.")) == "invalid_request"
    assert error_kind(TimeoutError()) == "timeout"
    assert error_kind(TargetError("down.")) == "backend"
    assert error_kind(RuntimeError("?")) == "other"


def test_metrics_port_serves_the_registry(migrated_env: dict[str, str]) -> None:
    port = free_port()
    env = {**migrated_env, "VECTOR_DB_METRICS_PORT": str(port), "VECTOR_DB_METRICS_ADDR": "127.0.0.1"}
    with VectorDBClient(env) as client:
        client.search("gamma_docs", [0.1, 0.2, 0.3, 0.4], limit=2)
        assert client.metrics.registry is metrics_registry()
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    assert 'vector_db_request_duration_seconds_bucket{backend="qdrant",collection="gamma_docs"' in body
    assert 'vector_db_live_backend{backend="qdrant"} 1.0' in body
    # A second client in the same process reuses the server instead of failing on the busy port.
    with VectorDBClient(env):
        pass


def test_bad_metrics_port_is_one_sentence(migrated_env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match=r"^VECTOR_DB_METRICS_PORT='http' is not a TCP port"):
        VectorDBClient({**migrated_env, "VECTOR_DB_METRICS_PORT": "http"})
    assert serve_from_env({}) is None


def test_asgi_app_serves_the_metrics() -> None:
    from runbook_lib.app.metrics import asgi_app

    registry = CollectorRegistry()
    metrics = AppMetrics(registry=registry)
    with metrics.track("qdrant", "docs", "search"):
        pass
    app = asgi_app(metrics)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:]).decode()
    assert 'vector_db_request_duration_seconds_count{backend="qdrant",collection="docs",operation="search"} 1.0' in body


def test_app_layer_works_without_prometheus_client(migrated_env: dict[str, str]) -> None:
    """Without the `metrics` extra the wrapper searches as before; asking for a metrics port says what is missing."""
    code = """
import sys
sys.modules["prometheus_client"] = None  # as if the metrics extra were not installed
from runbook_lib.app import VectorDBClient
from runbook_lib.app.metrics import available, metrics_registry
from runbook_lib.errors import ConfigError
assert not available() and metrics_registry() is None
with VectorDBClient() as client:
    assert not client.metrics.enabled
    assert len(client.search("gamma_docs", [0.1, 0.2, 0.3, 0.4], limit=2).ids) == 2
    assert client.health()["reachable"]
try:
    VectorDBClient({**__import__("os").environ, "VECTOR_DB_METRICS_PORT": "9464"})
except ConfigError as exc:
    print(exc)
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**os.environ, **migrated_env}
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "needs prometheus-client, which is not installed: pip install 'runbook-lib[metrics]'" in proc.stdout

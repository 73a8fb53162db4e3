"""The monitoring folder, checked for real: the committed Grafana dashboard, the alert rules under promtool, and a
real Prometheus scraping the app's metrics while monitoring/loadgen.py searches both backends.

Debian's ``prometheus`` package provides ``prometheus`` and ``promtool``; ``make test`` installs it as root (CI)
when it is missing. Without it these tests skip with the reason, unless ``RUNBOOK_REQUIRE_PROMETHEUS=1`` (set by
``.ci/run``) makes that a failure. Everything listens on loopback, on free ports, and is bounded in time.
"""

from __future__ import annotations

import bisect
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from runbook_lib.app.metrics import LATENCY_BUCKETS_S
from runbook_lib.steps.migrate.engine import migrate

from conftest import free_port, make_small_db, run_step_inprocess

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "monitoring"
SCREENSHOTS = ROOT / "outputs" / "screenshots"
COLLECTIONS = "alpha_docs:16,beta_docs:8,gamma_docs:4"
LOAD_SECONDS = 12.0
ERROR_EVERY = 10
pytestmark = pytest.mark.filterwarnings("ignore:legacy embedding function config:DeprecationWarning")


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        reason = f"{name} is not installed (Debian's prometheus package; `make test` installs it as root)"
        if os.environ.get("RUNBOOK_REQUIRE_PROMETHEUS", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail(reason + " and RUNBOOK_REQUIRE_PROMETHEUS is set")
        pytest.skip(reason)
    return exe


def _generator() -> Any:
    spec = importlib.util.spec_from_file_location("generate_dashboard", MONITORING / "generate_dashboard.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_dashboard_is_what_the_generator_builds() -> None:
    gen = _generator()
    committed = (MONITORING / "grafana" / "cutover_dashboard.json").read_text()
    assert committed == gen.render(), "run: python monitoring/generate_dashboard.py"
    board = json.loads(committed)
    titles = [p["title"] for p in board["panels"] if p["type"] != "row"]
    for what in ("Search latency", "Queries per second", "Error rate", "In flight"):
        assert f"ChromaDB · {what}" in titles and f"Qdrant · {what}" in titles
    assert "Live backend (VECTOR_DB)" in titles
    # Side by side: each Chroma panel on the left half, its Qdrant twin on the right half of the same row.
    pos = {p["title"]: p["gridPos"] for p in board["panels"]}
    for what in ("Search latency", "Error rate"):
        left, right = pos[f"ChromaDB · {what}"], pos[f"Qdrant · {what}"]
        assert (left["x"], right["x"], left["y"]) == (0, 12, right["y"])
    latency = next(p for p in board["panels"] if p["title"] == "Qdrant · Search latency")
    assert [t["legendFormat"] for t in latency["targets"]] == ["p50", "p95", "p99"]
    assert all('backend="qdrant"' in t["expr"] for t in latency["targets"])


@pytest.mark.prometheus
def test_alert_rules_pass_promtool(tmp_path: Path) -> None:
    promtool = _tool("promtool")
    rules = MONITORING / "prometheus"
    check = subprocess.run([promtool, "check", "rules", str(rules / "alerts.yml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], capture_output=True, text=True, cwd=rules, timeout=120
    )
    assert test.returncode == 0, test.stdout + test.stderr
    assert "SUCCESS" in test.stdout + test.stderr


def _bucket(seconds: float) -> int:
    """Index of the histogram bucket holding ``seconds`` (len(LATENCY_BUCKETS_S) for +Inf)."""
    return bisect.bisect_left(LATENCY_BUCKETS_S, seconds)


def _query(url: str, expr: str) -> dict[str, float]:
    """An instant query; backend label -> value."""
    got = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert got["status"] == "success", got
    return {r["metric"].get("backend", ""): float(r["value"][1]) for r in got["data"]["result"]}


def _wait(predicate: Any, timeout_s: float, what: str, proc: subprocess.Popen[str] | None = None) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (httpx.HTTPError, ValueError, KeyError):
            value = None
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}")
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@pytest.mark.prometheus
@pytest.mark.slow
def test_prometheus_scrapes_the_app_and_agrees_with_the_load_generator(
    tmp_path: Path, runbook_env: dict[str, Path]
) -> None:
    prometheus = _tool("prometheus")
    make_small_db(runbook_env["chroma"])
    _, result = run_step_inprocess("migrate", migrate)
    assert result.ok

    app_port, prom_port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(MONITORING / "prometheus" / "alerts.yml")],
                "scrape_configs": [
                    {"job_name": "vector_db_app", "static_configs": [{"targets": [f"127.0.0.1:{app_port}"]}]}
                ],
            }
        )
    )
    url = f"http://127.0.0.1:{prom_port}"
    summary_path = tmp_path / "loadgen.json"
    env = {**os.environ, "VECTOR_DB_METRICS_PORT": str(app_port), "VECTOR_DB_METRICS_ADDR": "127.0.0.1"}
    with (tmp_path / "prometheus.log").open("w") as prom_log, (tmp_path / "loadgen.log").open("w") as load_log:
        prom = subprocess.Popen(
            [
                prometheus,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            stdout=prom_log,
            stderr=subprocess.STDOUT,
        )
        load = None
        try:
            _wait(lambda: httpx.get(f"{url}/-/ready", timeout=2).status_code == 200, 60, "prometheus ready", prom)
            started = time.time()
            load = subprocess.Popen(
                [
                    sys.executable,
                    str(MONITORING / "loadgen.py"),
                    f"--collections={COLLECTIONS}",
                    f"--seconds={LOAD_SECONDS}",
                    f"--error-every={ERROR_EVERY}",
                    f"--summary={summary_path}",
                    "--linger=120",
                ],
                stdout=load_log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            _wait(lambda: summary_path.is_file(), LOAD_SECONDS + 90, "the load generator's summary", load)
            own = json.loads(summary_path.read_text())
            search = 'operation="search"'
            # Prometheus has scraped the final values: its totals are the generator's, call for call.
            totals = {b: float(own[b]["queries"]) for b in ("chroma", "qdrant")}
            _wait(
                lambda: (
                    _query(url, f"sum by (backend) (vector_db_request_duration_seconds_count{{{search}}})") == totals
                ),
                30,
                f"Prometheus to scrape the final counts {totals}",
            )
            ended = time.time()
            p95 = _query(
                url,
                "histogram_quantile(0.95, sum by (backend, le) "
                f"(vector_db_request_duration_seconds_bucket{{{search}}}))",
            )
            error_ratio = _query(
                url,
                f"sum by (backend) (vector_db_errors_total{{{search}}}) / "
                f"sum by (backend) (vector_db_request_duration_seconds_count{{{search}}})",
            )
            live = _query(url, "vector_db_live_backend")
            rules = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
            recorded = _query(url, "backend:vector_db_search_error_ratio:rate5m")
            panels = _panel_series(url, started, ended)
        finally:
            if load is not None:
                _stop(load)
            _stop(prom)

    for backend in ("chroma", "qdrant"):
        mine = own[backend]
        assert mine["queries"] > 50 and mine["errors"] > 0, mine
        # The error rate is exact: the same calls counted on both sides.
        assert math.isclose(error_ratio[backend], mine["error_ratio"], rel_tol=1e-9), (backend, error_ratio, mine)
        # p95 within the histogram's resolution: Prometheus interpolates inside a bucket, and the generator's
        # own clock also counts the few microseconds around the wrapper's, so the same or the next bucket.
        prom_bucket, own_bucket = _bucket(p95[backend]), _bucket(mine["p95_s"])
        assert abs(prom_bucket - own_bucket) <= 1, (backend, p95[backend], mine["p95_s"])
        lo = LATENCY_BUCKETS_S[min(prom_bucket, own_bucket) - 1] if min(prom_bucket, own_bucket) else 0.0
        assert lo <= p95[backend] <= LATENCY_BUCKETS_S[max(prom_bucket, own_bucket)]
        assert recorded[backend] > 0  # the alert rules' recording rules evaluate on the real metrics
        print(
            f"{backend}: generator p95 {1000 * mine['p95_s']:.2f} ms, Prometheus p95 {1000 * p95[backend]:.2f} ms; "
            f"error ratio {mine['error_ratio']:.4f} both"
        )
    assert live == {"qdrant": 1.0, "chroma": 0.0}
    assert sum(len(g["rules"]) for g in rules) == 4
    for title, series in panels.items():
        assert series, f"the dashboard's {title} returned no series"
    shot = _plot_panels(panels, tmp_path / "dashboard_panels.png")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shot, SCREENSHOTS / "dashboard_panels.png")
    print(f"dashboard panels: {SCREENSHOTS / 'dashboard_panels.png'} (and {shot})")


def _panel_series(url: str, start: float, end: float) -> dict[tuple[str, str], list[tuple[str, np.ndarray]]]:
    """Every time series of the dashboard, asked of Prometheus exactly as the dashboard asks (the collection
    variable set to all, ``$__rate_interval`` to 5 s); (panel, backend) -> [(legend, [[t, v], ...])]."""
    gen = _generator()
    out: dict[tuple[str, str], list[tuple[str, np.ndarray]]] = {}
    for backend in ("chroma", "qdrant"):
        for title, legend, expr in gen.expressions(backend):
            expr = expr.replace("$collection", ".*").replace("$__rate_interval", "5s")
            got = httpx.get(
                f"{url}/api/v1/query_range",
                params={"query": expr, "start": start, "end": end + 1, "step": "1s"},
                timeout=20,
            ).json()
            assert got["status"] == "success", (expr, got)
            series = out.setdefault((title, backend), [])
            for r in got["data"]["result"]:
                name = legend.replace("{{kind}}", r["metric"].get("kind", "")).replace(
                    "{{operation}}", r["metric"].get("operation", "")
                )
                values = np.array([[float(t), float(v)] for t, v in r["values"] if v not in ("NaN", "+Inf")])
                if len(values):
                    series.append((name, values))
    return out


def _plot_panels(panels: dict[tuple[str, str], list[tuple[str, np.ndarray]]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gen = _generator()
    titles = [title for title, _, _ in gen.PANELS]
    units = {title: unit for title, unit, _ in gen.PANELS}
    fig, axes = plt.subplots(len(titles), 2, figsize=(13, 3.0 * len(titles)), squeeze=False)
    for row, title in enumerate(titles):
        for col, (backend, name) in enumerate(gen.BACKENDS):
            ax = axes[row][col]
            series = panels.get((title, backend), [])
            t0 = min((s[0, 0] for _, s in series), default=0.0)
            for legend, values in series:
                scale = 1000.0 if units[title] == "s" else (100.0 if units[title] == "percentunit" else 1.0)
                ax.plot(values[:, 0] - t0, values[:, 1] * scale, label=legend)
            unit = {"s": "ms", "percentunit": "%", "reqps": "queries/s"}.get(units[title], "")
            ax.set_title(f"{name} · {title}", fontsize=10)
            ax.set_ylabel(unit)
            ax.set_xlabel("seconds")
            ax.margins(y=0.25)
            ax.set_ylim(bottom=0)
            if series:
                ax.legend(fontsize=8, loc="upper right")
            ax.grid(alpha=0.3)
    fig.suptitle("Cutover dashboard panels as Prometheus answered them (monitoring/loadgen.py, local mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path

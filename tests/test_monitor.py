"""The monitor step (runbook_lib.steps.monitor.engine, notebooks/04_monitor.ipynb) on small real data.

Real chromadb (persistent directory and `chroma run` server), real Qdrant Edge (the engine; the filter translation
on local mode too, and local mode's disclaimer on local mode), real papermill.
Query counts and sweep levels are tiny so the file stays quick; nothing asserts on timings beyond "it finished".
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import nbformat
import numpy as np
import pytest
from pydantic import ValidationError

from runbook_fixtures.sample_data import create_sample_db
from runbook_lib.config.params import MonitorParams
from runbook_lib.errors import ConfigError, VerificationFailed
from runbook_lib.steps.migrate.engine import migrate
from runbook_lib.steps.monitor import report
from runbook_lib.steps.monitor.engine import MonitorContext, monitor
from runbook_lib.steps.monitor.result import MonitorResult
from runbook_lib.steps.monitor.stores import LOCAL_MODE_DISCLAIMER
from runbook_lib.steps.monitor.workload import equality_filter

from conftest import make_small_db, on_local_mode, open_qdrant, run_cli, run_step_inprocess

pytestmark = pytest.mark.filterwarnings("ignore:legacy embedding function config:DeprecationWarning")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
STAT_KEYS = ("queries", "ok", "errors", "timeouts", "error_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms", "mean_ms")
#: Small and quick: 8 measured queries per collection, two sweep levels of 0.25 s per store.
QUICK: dict[str, Any] = {"queries": 8, "warmup": 2, "concurrency": "1,4", "level_seconds": 0.25}


def _migrate(**params: Any) -> str:
    step, result = run_step_inprocess("migrate", migrate, **params)
    assert result.ok, result.errors
    return step.run.run_id


@pytest.fixture(scope="module")
def _migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """The small database migrated once per module; ``migrated`` copies it into each test's environment."""
    root = tmp_path_factory.mktemp("monitor_template")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("CHROMA_HOST", "CHROMA_PORT", "CHROMA_DATABASE", "QDRANT_URL", "QDRANT_API_KEY", "QDRANT_PATH"):
            mp.delenv(var, raising=False)
        mp.setenv("CHROMA_PERSIST_DIR", str(root / "chroma_db"))
        mp.setenv("QDRANT_EDGE_PATH", str(root / "qdrant"))
        mp.setenv("RUNBOOK_OUTPUTS", str(root / "outputs"))
        mp.setenv("RUNBOOK_PROGRESS", "off")
        mp.setenv("MPLBACKEND", "Agg")
        make_small_db(root / "chroma_db")
        run_id = _migrate()
    yield root, run_id


@pytest.fixture
def migrated(_migrated_template: tuple[Path, str], runbook_env: dict[str, Path]) -> str:
    """``runbook_env`` holding the small database and a finished migration of it; returns the run id."""
    root, run_id = _migrated_template
    for name, key in (("chroma_db", "chroma"), ("qdrant", "qdrant"), ("outputs", "outputs")):
        shutil.copytree(root / name, runbook_env[key])
    return run_id


def _monitor(run_id: str = "", hook: Any = None, **params: Any) -> tuple[Any, MonitorResult]:
    def fn(step: Any) -> MonitorResult:
        return monitor(step, hook=hook)

    return run_step_inprocess("monitor", fn, run_id=run_id, **{**QUICK, **params})  # type: ignore[no-any-return]


def _result_json(outputs: Path, run_id: str) -> dict[str, Any]:
    return json.loads((outputs / run_id / "04_monitor.json").read_text())  # type: ignore[no-any-return]


def _assert_stats(stats: dict[str, Any]) -> None:
    for key in STAT_KEYS:
        assert key in stats, key
    assert stats["p50_ms"] <= stats["p95_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert stats["min_ms"] <= stats["p50_ms"]
    assert stats["mean_ms"] > 0


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC), path
    assert len(data) > 5_000, path


# --- parameters ----------------------------------------------------------------------------------
def test_params_parse_and_validate_concurrency() -> None:
    p = MonitorParams(concurrency="16, 1,4,4 ,2")
    assert p.concurrency == [1, 2, 4, 16]
    assert MonitorParams().concurrency == [1, 2, 4, 8, 16]
    assert MonitorParams(concurrency="").concurrency == []
    assert (p.queries, p.warmup, p.k, p.level_seconds, p.duration_s, p.interval_s) == (50, 5, 10, 3.0, 0.0, 60.0)
    for bad in ("1,x", "0", "2000", "1.5"):
        with pytest.raises(ValidationError):
            MonitorParams(concurrency=bad)
    with pytest.raises(ValidationError):
        MonitorParams(queries=0)
    with pytest.raises(ValidationError):
        MonitorParams(interval_s=0)


def test_bad_parameter_is_one_config_error(runbook_env: dict[str, Path]) -> None:
    from runbook_lib.kernel.step import begin

    with pytest.raises(ConfigError, match="concurrency"):
        begin("monitor", concurrency="1,two")
    assert not runbook_env["outputs"].exists() or not any(runbook_env["outputs"].iterdir())


# --- the filter translation ----------------------------------------------------------------------
def test_equality_filter_selects_what_chroma_where_selects(tmp_path: Path, qdrant_store: Any) -> None:
    """Numbers by value (3 == 3.0), booleans apart from numbers, strings apart from numbers, lists ignored; on Edge
    and on local mode (``qdrant_store``)."""
    values: list[Any] = [3, 3.0, 1, True, False, 0, "3", "a", ["a", "b"], [3, 4], 2.5, None]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(values), 4)).astype(np.float32)
    ids = [f"r{i}" for i in range(len(values))]
    metas = [{"v": v, "n": i} if v is not None else {"n": i} for i, v in enumerate(values)]
    chroma = chromadb.PersistentClient(path=str(tmp_path / "c"))
    try:
        col = chroma.create_collection("filters", embedding_function=None)
        col.add(ids=ids, embeddings=vectors.tolist(), metadatas=metas)  # type: ignore[arg-type]
        qdrant_store.create_collection("filters", size=4, distance="Euclid")
        qdrant_store.upsert(
            "filters",
            [str(uuid.UUID(int=k + 1)) for k in range(len(ids))],
            vectors,
            [{"chroma_id": i, "metadata": m} for i, m in zip(ids, metas, strict=True)],
        )
        for value in (3, 3.0, 1, True, False, 0, "3", "a", 2.5, 4):
            expected = set(col.get(where={"v": value}, include=[])["ids"])
            points, _ = qdrant_store.scroll(
                "filters", query_filter=equality_filter("v", value), limit=100, with_payload=True, with_vectors=False
            )
            got = {p.payload["chroma_id"] for p in points if p.payload}
            assert got == expected, (value, got, expected)
    finally:
        from chromadb.api.shared_system_client import SharedSystemClient

        SharedSystemClient.clear_system_cache()


# --- through papermill ---------------------------------------------------------------------------
@pytest.mark.slow
def test_monitor_through_the_runner(runbook_env: dict[str, Path]) -> None:
    """`runbook migrate` then `runbook monitor` on the sample data: every figure for both stores, charts, reading."""
    create_sample_db(runbook_env["chroma"], scale=0.02, dim=64, progress=False)
    done = run_cli("migrate")
    assert done.returncode == 0, done.stdout + done.stderr
    (run_id,) = [p.name for p in runbook_env["outputs"].iterdir() if p.is_dir()]
    args = ["-p", "queries", "8", "-p", "warmup", "2", "-p", "concurrency", "1,4", "-p", "level_seconds", "0.25"]
    # The kernel draws with Jupyter's inline backend, as in JupyterLab (the fixture's MPLBACKEND=Agg would
    # keep step.save_figure's display() from embedding the charts in the executed notebook).
    inline = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    proc = run_cli("monitor", "--run-id", run_id, *args, "-p", "filter_key", "lang", env=inline)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = runbook_env["outputs"] / run_id
    data = _result_json(runbook_env["outputs"], run_id)
    assert data["status"] == "ok" and data["ok"] is True
    assert data["parameters"]["concurrency"] == [1, 4]
    assert data["parameters"]["filter_key"] == "lang"
    measured = [c for c in data["collections"] if c["status"] == "measured"]
    assert len(measured) == 14
    assert all(c["filter_applied"] for c in measured)
    for store in ("chroma", "qdrant"):
        overall = data["sequential"]["overall"][store]
        _assert_stats(overall)
        assert overall["queries"] == 8 * 14 and overall["errors"] == 0
        for name in (c["source"] for c in measured):
            _assert_stats(data["sequential"]["per_collection"][name][store])
            assert len(data["sequential_latencies_ms"][store][name]) == 8
        rows = [r for r in data["concurrency"]["rows"] if r["store"] == store]
        assert [r["concurrency"] for r in rows] == [1, 4]
        for row in rows:
            assert row["qps"] > 0 and row["ok"] > 0 and row["error_rate"] == 0.0
            assert row["p50_ms"] <= row["p95_ms"] <= row["p99_ms"] <= row["max_ms"]
        assert data["concurrency"]["max_held"][store] == 4
        assert data["errors"][store]["error_rate"] == 0.0
    assert data["agreement"]["overall"]["compared"] == 8 * 14
    assert 0.0 <= data["agreement"]["overall"]["share_same_ids"] <= 1.0
    metrics = [row["metric"] for row in data["comparison"]]
    assert any("p50" in m for m in metrics) and any("concurrency" in m for m in metrics)
    # which engine was measured, said plainly: the engine (Qdrant Edge), so no local-mode disclaimer
    assert data["local_mode"] is False and data["disclaimer"] is None
    assert data["engines"]["qdrant"]["kind"] == "embedded engine (Qdrant Edge)"
    assert "not a Qdrant server" not in data["verdict"]
    assert not any(LOCAL_MODE_DISCLAIMER in para for para in data["reading"])
    # charts: named in the result, present, non-empty PNGs
    assert set(data["figures"]) == {
        "figures/monitor_latency_cdf.png",
        "figures/monitor_latency_per_collection.png",
        "figures/monitor_concurrency.png",
    }
    for rel in data["figures"]:
        _assert_png(run / rel)
    # the executed notebook and its HTML show the table, the reading and the disclaimer; no cell failed
    nb = nbformat.read(run / "04_monitor.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert sum(1 for o in outputs if "image/png" in o.get("data", {})) >= 3
    html = (run / "04_monitor.html").read_text()
    assert "Max concurrency held" in html
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["steps"]["monitor"]["status"] == "ok"


@on_local_mode
def test_local_mode_is_measured_with_its_disclaimer(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    """Measured on qdrant-client's local mode, the result says plainly that it is not the Qdrant engine."""
    run_id = _migrate(collections="gamma_docs")
    _, result = _monitor(run_id, concurrency="")
    data = _result_json(runbook_env["outputs"], run_id)
    assert data["local_mode"] is True and data["disclaimer"] == LOCAL_MODE_DISCLAIMER
    assert data["engines"]["qdrant"]["kind"] == "embedded local mode"
    assert "not a Qdrant server" in data["verdict"]
    assert any(LOCAL_MODE_DISCLAIMER in para for para in data["reading"])


# --- errors are counted, not fatal ----------------------------------------------------------------
def test_collection_deleted_before_the_run_shows_errors(migrated: str, runbook_env: dict[str, Path]) -> None:
    """The checkpoint still lists gamma_docs as done, but Qdrant lost it: 100 % errors there, the rest measured."""
    run_id = migrated
    with open_qdrant(runbook_env["qdrant"]) as target:
        target.delete_collection("gamma_docs")
    _, result = _monitor(run_id)
    assert result.ok
    data = _result_json(runbook_env["outputs"], run_id)
    assert data["status"] == "ok"
    per = data["sequential"]["per_collection"]
    assert per["gamma_docs"]["qdrant"]["error_rate"] == 1.0
    assert per["gamma_docs"]["qdrant"]["p50_ms"] is None
    assert per["gamma_docs"]["chroma"]["error_rate"] == 0.0
    assert per["alpha_docs"]["qdrant"]["error_rate"] == 0.0
    assert data["errors"]["qdrant"]["errors"] > 0 and data["errors"]["chroma"]["errors"] == 0
    assert any("gamma_docs" in s["message"] for s in data["errors"]["qdrant"]["samples"])
    sweep = [r for r in data["concurrency"]["rows"] if r["store"] == "qdrant"]
    assert all(0 < r["error_rate"] < 1 for r in sweep)  # one collection of three fails
    assert all(r["qps"] > 0 for r in sweep)
    assert data["concurrency"]["max_held"]["qdrant"] is None
    assert any("gamma_docs" in w for w in data["warnings"])
    assert data["agreement"]["per_collection"]["gamma_docs"]["compared"] == 0
    assert "Qdrant" in report.comparison_table(result).columns[2]


def test_collection_deleted_mid_run_shows_errors(migrated: str, runbook_env: dict[str, Path]) -> None:
    """A hook deletes beta_docs from Qdrant after the sequential phase: the sweep and the watch count errors."""
    run_id = migrated

    def hook(event: str, ctx: MonitorContext) -> None:
        if event == "sweep":
            ctx.target.delete_collection("beta_docs")

    _, result = _monitor(run_id, hook=hook, duration_s=0.6, interval_s=0.3)
    data = _result_json(runbook_env["outputs"], run_id)
    assert data["status"] == "ok"
    assert data["sequential"]["overall"]["qdrant"]["errors"] == 0
    phases = data["errors"]["qdrant"]["by_phase"]
    assert phases["sequential"]["errors"] == 0
    assert phases["sweep"]["errors"] > 0 and phases["watch"]["errors"] > 0
    assert data["errors"]["chroma"]["errors"] == 0
    for probe in data["watch"]["probes"]:
        q = probe["stores"]["qdrant"]
        assert q["connection_ok"] is True
        assert q["counts"]["beta_docs"] is None and q["counts_failed"] == ["beta_docs"] and not q["healthy"]
    assert data["watch"]["unhealthy_probes"] == len(data["watch"]["probes"]) >= 1
    assert "Errors" in report.reading_md(result)
    assert len(report.errors_table(result)) == 6


# --- watch mode ----------------------------------------------------------------------------------
def test_watch_stops_at_its_duration(migrated: str, runbook_env: dict[str, Path]) -> None:
    run_id = migrated
    _, result = _monitor(run_id, concurrency="", duration_s=2, interval_s=0.5)
    watch = _result_json(runbook_env["outputs"], run_id)["watch"]
    assert watch["enabled"] and watch["stopped"] == "duration"
    assert 3 <= watch["probes_done"] <= 4
    assert [p["index"] for p in watch["probes"]] == list(range(watch["probes_done"]))
    for probe in watch["probes"]:
        for store in ("chroma", "qdrant"):
            entry = probe["stores"][store]
            assert entry["connection_ok"] and entry["counts_unchanged"] and entry["healthy"]
            assert entry["counts"] == {"alpha_docs": 700, "beta_docs": 300, "gamma_docs": 120}
            assert entry["queries"] == 3 * 8 and entry["errors"] == 0
            assert entry["p50_ms"] <= entry["p95_ms"] <= entry["max_ms"]
    assert result.sweep == []
    assert "figures/monitor_watch.png" in result.figures
    _assert_png(runbook_env["outputs"] / run_id / "figures" / "monitor_watch.png")
    assert len(report.watch_table(result)) == 2 * watch["probes_done"]


def test_watch_mode_exposes_the_app_metrics(
    migrated: str, runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watch probes are recorded as the wrapper's Prometheus series and served on VECTOR_DB_METRICS_PORT."""
    import urllib.request

    from conftest import free_port

    port = free_port()
    monkeypatch.setenv("VECTOR_DB_METRICS_PORT", str(port))
    monkeypatch.setenv("VECTOR_DB_METRICS_ADDR", "127.0.0.1")
    _monitor(migrated, concurrency="", duration_s=1, interval_s=0.5)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for backend in ("chroma", "qdrant"):
        counts = [
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("vector_db_request_duration_seconds_count")
            and f'backend="{backend}"' in line
            and 'operation="search"' in line
        ]
        assert counts and sum(counts) >= 24, (backend, text[:2000])


def _sigint_soon() -> None:
    """A real SIGINT to this process shortly (what Jupyter's interrupt button sends the kernel)."""
    threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()


def test_watch_interrupted_by_sigint_still_files(migrated: str, runbook_env: dict[str, Path]) -> None:
    """SIGINT during a long watch: the watch stops, and the step files its result and charts."""
    run_id = migrated
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def hook(event: str, ctx: MonitorContext) -> None:
        if event == "probe" and ctx.probe_index == 2:
            _sigint_soon()

    try:
        _, result = _monitor(run_id, hook=hook, concurrency="", duration_s=120, interval_s=0.2)
    finally:
        signal.signal(signal.SIGINT, previous)
    data = _result_json(runbook_env["outputs"], run_id)
    assert data["status"] == "ok" and data["interrupted"] == "watch"
    assert data["watch"]["stopped"] == "interrupted"
    assert data["watch"]["probes_done"] >= 2
    assert "figures/monitor_watch.png" in data["figures"]
    assert "Interrupted" in report.reading_md(result)


def test_sweep_interrupted_by_sigint_still_files(migrated: str, runbook_env: dict[str, Path]) -> None:
    """SIGINT while the sweep's threads run: the sequential figures are filed, the watch never starts."""
    run_id = migrated
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)

    def hook(event: str, ctx: MonitorContext) -> None:
        if event == "sweep":
            _sigint_soon()

    try:
        _, result = _monitor(run_id, hook=hook, concurrency="8", level_seconds=60, duration_s=60)
    finally:
        signal.signal(signal.SIGINT, previous)
    data = _result_json(runbook_env["outputs"], run_id)
    assert data["status"] == "ok" and data["interrupted"] == "sweep"
    for store in ("chroma", "qdrant"):
        _assert_stats(data["sequential"]["overall"][store])
    assert data["concurrency"]["rows"] == []
    assert data["watch"]["probes_done"] == 0
    assert "figures/monitor_latency_cdf.png" in data["figures"]
    assert "figures/monitor_concurrency.png" not in data["figures"]
    assert result.interrupted == "sweep"


# --- which collections -----------------------------------------------------------------------------
def test_without_a_checkpoint_all_source_collections_are_used(migrated: str, runbook_env: dict[str, Path]) -> None:
    step, result = _monitor("", concurrency="1")  # a new run: no migrate checkpoint
    rows = {c.source: c for c in result.collections}
    assert {n for n, c in rows.items() if c.status == "measured"} == {"alpha_docs", "beta_docs", "gamma_docs"}
    assert rows["empty_docs"].status == "skipped" and "empty" in rows["empty_docs"].reason
    assert all(c.target == c.source for c in rows.values())
    assert any("no migrate checkpoint" in w for w in result.warnings)
    assert result.agreement["overall"]["compared"] == 3 * 8


@on_local_mode  # cutover=alias: Edge has no aliases
def test_alias_cutover_is_queried_by_alias(
    small_source: dict[str, dict[str, Any]], runbook_env: dict[str, Path]
) -> None:
    run_id = _migrate(cutover="alias", collections="alpha_docs")
    _, result = _monitor(run_id, concurrency="")
    (row,) = result.collections
    assert row.status == "measured" and row.target == "alpha_docs" and row.source_count == row.target_count == 700
    assert result.overall("qdrant")["errors"] == 0
    assert result.agreement["overall"]["compared"] == 8


def test_nothing_to_measure_fails_with_a_sentence(migrated: str, runbook_env: dict[str, Path]) -> None:
    run_id = migrated
    with pytest.raises(VerificationFailed, match="no collection can be measured"):
        _monitor(run_id, collections="empty_docs")
    data = _result_json(runbook_env["outputs"], run_id)
    assert data["status"] == "failed" and "empty in ChromaDB" in data["verdict"]


# --- a Chroma server as the source -----------------------------------------------------------------
@pytest.mark.server
def test_monitor_against_a_chroma_server(server_env: dict[str, Any]) -> None:
    run_id = _migrate()
    _, result = _monitor(run_id, queries=5, warmup=1)
    assert result.ok
    assert result.engines["chroma"]["kind"] == "server"
    assert {c.source for c in result.measured} == {"srv_cosine", "srv_l2"}
    for store in ("chroma", "qdrant"):
        _assert_stats(result.overall(store))
        assert result.errors[store]["error_rate"] == 0.0
    assert result.agreement["overall"]["compared"] == 10


def test_the_filter_follows_the_runs_payload_layout() -> None:
    """Under the llamaindex layout metadata keys are top-level payload keys: the monitor's filter says so."""
    from runbook_lib.steps.monitor.workload import equality_filter

    nested, flat = equality_filter("topic", "a"), equality_filter("topic", "a", flat=True)
    assert "metadata.topic" in nested.model_dump_json() and "metadata.topic" not in flat.model_dump_json()
    assert '"key":"topic"' in flat.model_dump_json()

"""The monitor step (``04_monitor.ipynb``): Chroma and Qdrant latency, throughput and errors side by side.

The migration guide promises "query latency 320 ms → 180 ms" and "10 → 100+ concurrent queries", then says
to watch logs and dashboards for 24 hours. This step measures those claims on the user's own data:

1. **Workload** (:mod:`runbook_lib.steps.monitor.workload`): per collection, ``warmup + queries`` query vectors
   drawn from the collection itself (stored and perturbed, deterministic from ``seed``), top-``k``,
   optionally filtered on equality of metadata key ``filter_key``; the same queries go to both stores
   (:mod:`runbook_lib.steps.monitor.stores`).
2. **Sequential latency** (:mod:`runbook_lib.steps.monitor.measure`): p50/p95/p99/max/mean per store and
   collection (warm-ups excluded).
3. **Concurrency sweep**: for each level of ``concurrency``, ``level_seconds`` per store: throughput,
   p95 and error rate.
4. **Watch mode** (``duration_s`` > 0, :mod:`runbook_lib.steps.monitor.watch`): a probe every ``interval_s``
   (health: connection and collection counts vs the first probe; latency and errors) until the duration is
   reached or the kernel is interrupted; what was measured is filed either way.
5. **Result agreement**: the share of queries whose top-k Chroma ids equal the Qdrant payloads' ``chroma_id``.

This module holds the orchestration (:func:`monitor`: open the stores, run the phases, file the result and
its charts); :mod:`~runbook_lib.steps.monitor.collect` turns the raw runs into the figures of
:class:`~runbook_lib.steps.monitor.result.MonitorResult`, and :mod:`~runbook_lib.steps.monitor.report` shows
them as tables.

Errors are reported, never hidden and never fatal: the step fails only when it cannot run at all. Which
engines were measured is part of the result: qdrant-client's embedded local mode is a pure-Python exact
search, not the Qdrant server, and the result says so whenever it is the target.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from runbook_lib.app.metrics import AppMetrics, default_metrics, serve_from_env
from runbook_lib.app.metrics import available as metrics_available
from runbook_lib.chroma.base import ChromaReader
from runbook_lib.chroma.connect import open_source
from runbook_lib.config.params import MonitorParams
from runbook_lib.kernel.display import progress
from runbook_lib.kernel.step import Step
from runbook_lib.qdrant import base as qdrant_base
from runbook_lib.qdrant.connect import open_target
from runbook_lib.state.checkpoint import read_checkpoint
from runbook_lib.steps.monitor.charts import concurrency_sweep, latency_cdf, percentiles_per_collection, watch_over_time
from runbook_lib.steps.monitor.collect import collect
from runbook_lib.steps.monitor.measure import LevelResult, SequentialRun, Tally, interleave, run_level, run_sequential
from runbook_lib.steps.monitor.result import HELD_ERROR_RATE, MonitorResult
from runbook_lib.steps.monitor.stores import RETURNED_FIELDS, STORES, ChromaStore, QdrantStore, Store
from runbook_lib.steps.monitor.watch import Probe, WatchRun, run_watch
from runbook_lib.steps.monitor.workload import (
    PERTURBATION,
    MonitoredCollection,
    Query,
    build_queries,
    monitored_collections,
)

log = logging.getLogger(__name__)


@dataclass
class MonitorContext:
    """What a hook sees: the open stores and the collections (tests use it to break things for real)."""

    step: Step
    source: ChromaReader
    target: qdrant_base.QdrantStore
    collections: list[MonitoredCollection]
    stores: dict[str, Store]
    probe_index: int = -1


#: ``hook(event, context)``; events: "start", "sequential", "sweep", "watch", "probe" (before each probe,
#: ``context.probe_index`` set), "end". A hook that raises KeyboardInterrupt stops the step like Jupyter's
#: interrupt does; anything else it raises fails the step.
MonitorHook = Callable[[str, MonitorContext], None]


# --- the step ------------------------------------------------------------------------------------
def _watch_metrics() -> AppMetrics | None:
    """The app wrapper's metrics for the watch probes, served on ``VECTOR_DB_METRICS_PORT`` when it is set."""
    if not metrics_available():
        return None
    m = default_metrics()
    serve_from_env(os.environ, m)
    return m


def monitor(step: Step, *, hook: MonitorHook | None = None) -> MonitorResult:
    """The monitor step. ``hook`` (optional) is called at each phase; see :data:`MonitorHook`."""
    p: MonitorParams = step.params  # type: ignore[assignment]
    t0 = time.perf_counter()
    result = MonitorResult(ok=True)
    result.workload = {
        "queries": p.queries,
        "warmup": p.warmup,
        "k": p.k,
        "filter_key": p.filter_key or None,
        "seed": p.seed,
        "timeout_s": p.timeout_s,
        "perturbation": PERTURBATION,
        "returned_fields": RETURNED_FIELDS,
        "query_kinds": "even-numbered: a stored vector; odd-numbered: that vector plus Gaussian noise",
    }
    state = read_checkpoint(step.run)
    checkpoint = state["collections"] if state else None
    if checkpoint is None:
        result.warnings.append(
            "This run has no migrate checkpoint: every source collection is queried in Qdrant under its own name."
        )
    source = open_source(step.settings.chroma)
    try:
        if source.upgraded_on_open:
            result.warnings.append(
                "The source was written by an older chromadb: the scratch copy was upgraded to read it; the live "
                "directory is untouched."
            )
        with open_target(step.settings.qdrant) as target:
            chroma, qdrant = ChromaStore(source), QdrantStore(target)
            stores: dict[str, Store] = {"chroma": chroma, "qdrant": qdrant}
            result.engines = {"chroma": chroma.engine(), "qdrant": qdrant.engine()}
            if not target.capabilities.engine:
                log.warning("Qdrant is qdrant-client's embedded local mode: its figures are not the Qdrant engine's.")
            result.collections = monitored_collections(source, target, checkpoint, p.collections)
            measured = result.measured
            for c in measured:
                if c.migration_status == "done" and c.target_count is None:
                    result.warnings.append(
                        f"Qdrant has no collection or alias {c.target!r} although the migration recorded "
                        f"{c.source!r} as done: its Qdrant queries will count as errors."
                    )
            if not measured:
                result.problem = (
                    "no collection can be measured ("
                    + (
                        "; ".join(f"{c.source}: {c.reason}" for c in result.collections)
                        or "the source has no collections"
                    )
                    + ")."
                )
                result.ok = False
            else:
                chroma.prepare([c.source for c in measured])
                workload: dict[str, list[Query]] = {}
                for c in measured:
                    queries, warnings = build_queries(
                        source,
                        c,
                        queries=p.queries,
                        warmup=p.warmup,
                        seed=p.seed,
                        filter_key=p.filter_key,
                        flat=(state or {}).get("payload_layout") == "llamaindex",
                    )
                    workload[c.source] = queries
                    result.warnings.extend(warnings)
                ctx = MonitorContext(step, source, target, result.collections, stores)
                _measure(ctx, p, workload, result, hook)
    finally:
        source.close()
    result.seconds = time.perf_counter() - t0
    if result.ok:
        result.figures = _charts(step, result)
    log.debug("monitor: %s", result.verdict)  # the notebook prints the verdict itself
    return result


def _measure(
    ctx: MonitorContext,
    p: MonitorParams,
    workload: dict[str, list[Query]],
    result: MonitorResult,
    hook: MonitorHook | None,
) -> None:
    """Run the phases; Jupyter's interrupt (KeyboardInterrupt) stops them and keeps what was measured."""

    def emit(event: str) -> None:
        if hook is not None:
            hook(event, ctx)

    tallies: dict[str, dict[str, Tally]] = {s: {} for s in STORES}
    runs: list[SequentialRun] = []
    levels: list[LevelResult] = []
    watch: WatchRun | None = None
    phase = "start"
    result.sweep_info = {
        "levels": list(p.concurrency),
        "level_seconds": p.level_seconds,
        "held_error_rate": HELD_ERROR_RATE,
        "note": _concurrency_note(result),
        "serialized_target_calls": False,
    }
    try:
        emit("start")
        phase = "sequential"
        emit(phase)
        bar = progress(total=sum(len(v) for v in workload.values()), desc="sequential latency", unit="query")
        try:
            for name, queries in workload.items():
                run = run_sequential(ctx.stores, queries, p.k, p.timeout_s, on_query=lambda: bar.update(1))
                runs.append(run)
                for store in STORES:
                    tallies[store]["sequential:" + name] = run.tally(store)
                if run.interrupted:
                    raise KeyboardInterrupt
        finally:
            bar.close()
        pooled = interleave([[q for q in qs if not q.warmup] for qs in workload.values()])
        if p.concurrency:
            phase = "sweep"
            emit(phase)
            bar = progress(total=2 * len(p.concurrency), desc="concurrency sweep", unit="level")
            try:
                for level in p.concurrency:
                    for store in STORES:
                        levels.append(
                            run_level(
                                ctx.stores[store],
                                pooled,
                                p.k,
                                concurrency=level,
                                seconds=p.level_seconds,
                                timeout_s=p.timeout_s,
                            )
                        )
                        bar.update(1)
            finally:
                bar.close()
        if p.duration_s > 0:
            phase = "watch"
            emit(phase)
            expected = max(1, math.ceil(p.duration_s / p.interval_s))
            bar = progress(total=expected, desc="watch", unit="probe")

            def before(index: int) -> None:
                ctx.probe_index = index
                emit("probe")

            def after(_: Probe) -> None:
                bar.update(1)

            counts_names = {
                "chroma": {c.source: c.source for c in result.measured},
                "qdrant": {c.source: c.target for c in result.measured},
            }
            try:
                watch = run_watch(
                    ctx.stores,
                    counts_names,
                    pooled,
                    p.k,
                    p.timeout_s,
                    duration_s=p.duration_s,
                    interval_s=p.interval_s,
                    before_probe=before,
                    after_probe=after,
                    metrics=_watch_metrics(),
                )
            finally:
                bar.close()
            if watch.stopped == "interrupted":
                result.interrupted = "watch"
        phase = "end"
        emit(phase)
    except KeyboardInterrupt:
        result.interrupted = phase
        log.warning("monitor interrupted during %s: filing what was measured", phase)
    collect(result, runs, tallies, levels, watch, p)


def _concurrency_note(result: MonitorResult) -> str:
    notes = []
    if result.engines.get("qdrant", {}).get("local_mode"):
        notes.append(
            "Qdrant local mode is called from the sweep's threads without a lock: in qdrant-client 1.20 its "
            "queries only read in-memory NumPy arrays and never touch its SQLite file, and the monitor writes "
            "nothing, so concurrent reads are safe; the threads share one Python process and its GIL, so its "
            "throughput cannot scale the way a server's does."
        )
    else:
        notes.append("Qdrant is a server: the sweep's threads send concurrent requests over the network.")
    if result.engines.get("chroma", {}).get("local_mode"):
        notes.append("Chroma's embedded client runs in the same process, called from the same threads.")
    else:
        notes.append("Chroma is a server: the sweep's threads send concurrent HTTP requests.")
    return " ".join(notes)


def _charts(step: Step, result: MonitorResult) -> list[str]:
    note = "Qdrant: embedded local mode (pure-Python exact search), not a Qdrant server." if result.local_mode else None
    figures: list[tuple[str, Any]] = [
        ("monitor_latency_cdf", latency_cdf(_pooled(result), result.engines, note)),
        (
            "monitor_latency_per_collection",
            percentiles_per_collection(result.sequential.get("per_collection", {}), result.engines, note),
        ),
        (
            "monitor_concurrency",
            concurrency_sweep(result.sweep, result.engines, note, result.sweep_info.get("level_seconds")),
        ),
        ("monitor_watch", watch_over_time(result.watch.get("probes", []), result.engines, note)),
    ]
    return [step.save_figure(fig, name) for name, fig in figures if fig is not None]


def _pooled(result: MonitorResult) -> dict[str, list[float]]:
    return {s: [x for v in result.latencies_ms.get(s, {}).values() for x in v] for s in STORES}

"""The monitor step (``04_monitor.ipynb``): Chroma and Qdrant latency, throughput and errors side by side.

The migration guide promises "query latency 320 ms → 180 ms" and "10 → 100+ concurrent queries", then says
to watch logs and dashboards for 24 hours. This step measures those claims on the user's own data:

1. **Workload** (:mod:`runbook_lib.steps.monitor.workload`): per collection, ``warmup + queries`` query vectors
   drawn from the collection itself (stored and perturbed, deterministic from ``seed``), top-``k``,
   optionally filtered on equality of metadata key ``filter_key``; the same queries go to both stores.
2. **Sequential latency**: p50/p95/p99/max/mean per store and collection (warm-ups excluded).
3. **Concurrency sweep**: for each level of ``concurrency``, ``level_seconds`` per store: throughput,
   p95 and error rate.
4. **Watch mode** (``duration_s`` > 0): a probe every ``interval_s`` (health: connection and collection
   counts vs the first probe; latency and errors) until the duration is reached or the kernel is
   interrupted; what was measured is filed either way.
5. **Result agreement**: the share of queries whose top-k Chroma ids equal the Qdrant payloads' ``chroma_id``.

Errors are reported, never hidden and never fatal: the step fails only when it cannot run at all. Which
engines were measured is part of the result: qdrant-client's embedded local mode is a pure-Python exact
search, not the Qdrant server, and the result says so whenever it is the target.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from runbook_lib.config.params import MonitorParams
from runbook_lib.runtime.display import progress
from runbook_lib.runtime.step import Step
from runbook_lib.source.chroma import ChromaSource
from runbook_lib.state.checkpoint import read_checkpoint
from runbook_lib.steps.monitor.charts import concurrency_sweep, latency_cdf, percentiles_per_collection, watch_over_time
from runbook_lib.steps.monitor.measure import (
    LevelResult,
    Probe,
    SequentialRun,
    Tally,
    WatchRun,
    agreement,
    interleave,
    run_level,
    run_sequential,
    run_watch,
)
from runbook_lib.steps.monitor.workload import (
    LOCAL_MODE_DISCLAIMER,
    PERTURBATION,
    RETURNED_FIELDS,
    STORE_LABELS,
    STORES,
    ChromaStore,
    MonitoredCollection,
    QdrantStore,
    Query,
    Store,
    build_queries,
    monitored_collections,
)
from runbook_lib.target.qdrant import QdrantTarget

log = logging.getLogger(__name__)

#: A concurrency level is "held" when fewer than this share of its queries failed or timed out.
HELD_ERROR_RATE = 0.01

#: The guide's claims, shown next to the measured values.
GUIDE_LATENCY = "320 ms → 180 ms (−44 %)"
GUIDE_CONCURRENCY = "10 → 100+"


# --- parameters ----------------------------------------------------------------------------------
# --- result --------------------------------------------------------------------------------------
@dataclass
class MonitorContext:
    """What a hook sees: the open stores and the collections (tests use it to break things for real)."""

    step: Step
    source: ChromaSource
    target: QdrantTarget
    collections: list[MonitoredCollection]
    stores: dict[str, Store]
    probe_index: int = -1


#: ``hook(event, context)``; events: "start", "sequential", "sweep", "watch", "probe" (before each probe,
#: ``context.probe_index`` set), "end". A hook that raises KeyboardInterrupt stops the step like Jupyter's
#: interrupt does; anything else it raises fails the step.
MonitorHook = Callable[[str, MonitorContext], None]


@dataclass
class MonitorResult:
    """Every figure the monitor measured, for both stores, and how to read them."""

    ok: bool
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    workload: dict[str, Any] = field(default_factory=dict)
    collections: list[MonitoredCollection] = field(default_factory=list)
    sequential: dict[str, Any] = field(default_factory=lambda: {"overall": {}, "per_collection": {}})
    latencies_ms: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    agreement: dict[str, Any] = field(default_factory=lambda: {"overall": {}, "per_collection": {}})
    sweep: list[dict[str, Any]] = field(default_factory=list)
    sweep_info: dict[str, Any] = field(default_factory=dict)
    watch: dict[str, Any] = field(default_factory=lambda: {"enabled": False})
    errors: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    figures: list[str] = field(default_factory=list)
    interrupted: str | None = None  # the phase Jupyter's interrupt stopped, if any
    seconds: float = 0.0
    problem: str | None = None  # why the step could not measure anything

    # --- derived figures -------------------------------------------------------------------------
    @property
    def local_mode(self) -> bool:
        return bool(self.engines.get("qdrant", {}).get("local_mode"))

    @property
    def disclaimer(self) -> str | None:
        return LOCAL_MODE_DISCLAIMER if self.local_mode else None

    @property
    def measured(self) -> list[MonitoredCollection]:
        return [c for c in self.collections if c.status == "measured"]

    def overall(self, store: str) -> dict[str, Any]:
        return dict(self.sequential.get("overall", {}).get(store, {}))

    def max_held(self, store: str) -> int | None:
        """The highest concurrency level whose error rate stayed under 1 % (None: none did, or no sweep)."""
        held = [
            r["concurrency"]
            for r in self.sweep
            if r["store"] == store and r["ok"] and r["error_rate"] is not None and r["error_rate"] < HELD_ERROR_RATE
        ]
        return max(held) if held else None

    def peak_qps(self, store: str) -> float | None:
        values = [r["qps"] for r in self.sweep if r["store"] == store and r["qps"] is not None]
        return max(values) if values else None

    def comparison(self) -> list[dict[str, Any]]:
        """The guide's comparison table with the measured values and the relative change (Qdrant vs Chroma)."""
        c, q = self.overall("chroma"), self.overall("qdrant")
        levels = self.sweep_info.get("levels") or []
        top = max(levels) if levels else None
        rows: list[dict[str, Any]] = []
        for pct, guide in (("p50", GUIDE_LATENCY), ("p95", "—"), ("p99", "—")):
            cv, qv = c.get(f"{pct}_ms"), q.get(f"{pct}_ms")
            rows.append(
                {
                    "metric": f"Query latency {pct} (ms, sequential)",
                    "guide": guide,
                    "chroma": _ms(cv),
                    "qdrant": _ms(qv),
                    "change": _relative(cv, qv, lower_is_better=True),
                }
            )

        def held(store: str) -> str:
            if not self.sweep:
                return "not measured"
            level = self.max_held(store)
            if level is None:
                return "none (every level ≥ 1 % errors)"
            return f"{level} (highest tested)" if level == top else str(level)

        ch, qh = self.max_held("chroma"), self.max_held("qdrant")
        rows.append(
            {
                "metric": "Max concurrency held (error rate < 1 %)",
                "guide": GUIDE_CONCURRENCY,
                "chroma": held("chroma"),
                "qdrant": held("qdrant"),
                "change": f"×{qh / ch:.1f}" if ch and qh else "n/a",
            }
        )
        if self.sweep:
            swept = max(r["concurrency"] for r in self.sweep)
            at_top = {r["store"]: r["p95_ms"] for r in self.sweep if r["concurrency"] == swept}
            rows.append(
                {
                    "metric": f"Query latency p95 at {swept} concurrent callers (ms)",
                    "guide": "—",
                    "chroma": _ms(at_top.get("chroma")),
                    "qdrant": _ms(at_top.get("qdrant")),
                    "change": _relative(at_top.get("chroma"), at_top.get("qdrant"), lower_is_better=True),
                }
            )
        cq, qq = self.peak_qps("chroma"), self.peak_qps("qdrant")
        rows.append(
            {
                "metric": "Peak throughput (successful queries/s)",
                "guide": "—",
                "chroma": _num(cq),
                "qdrant": _num(qq),
                "change": _relative(cq, qq, lower_is_better=False),
            }
        )
        ce, qe = self.errors.get("chroma", {}), self.errors.get("qdrant", {})
        rows.append(
            {
                "metric": "Errors + timeouts (all phases)",
                "guide": "watch error rates",
                "chroma": _errors(ce),
                "qdrant": _errors(qe),
                "change": "",
            }
        )
        a = self.agreement.get("overall", {})
        share = a.get("share_same_ids")
        rows.append(
            {
                "metric": f"Same top-{self.workload.get('k', '?')} ids in both stores",
                "guide": "—",
                "chroma": "reference",
                "qdrant": "n/a"
                if share is None
                else f"{100 * share:.1f} % of {a['compared']} queries (mean overlap {100 * a['mean_overlap']:.1f} %)",
                "change": "",
            }
        )
        return rows

    @property
    def verdict(self) -> str:
        if self.problem:
            return f"Monitor could not measure: {self.problem}"
        c, q = self.overall("chroma"), self.overall("qdrant")
        n = sum(len(v) for v in self.latencies_ms.get("chroma", {}).values())
        a = self.agreement.get("overall", {}).get("share_same_ids")
        parts = [
            f"Measured {n:,} queries per store on {len(self.measured)} collection(s)"
            + (f" (interrupted during {self.interrupted})" if self.interrupted else "")
            + f": p50 Chroma {_ms(c.get('p50_ms'))} ms vs Qdrant {_ms(q.get('p50_ms'))} ms, "
            f"{_relative(c.get('p50_ms'), q.get('p50_ms'), lower_is_better=True)}",
            f"p95 {_ms(c.get('p95_ms'))} vs {_ms(q.get('p95_ms'))} ms",
            f"errors Chroma {_pct(self.errors.get('chroma', {}).get('error_rate'))}, "
            f"Qdrant {_pct(self.errors.get('qdrant', {}).get('error_rate'))}",
            f"same top-{self.workload.get('k')} ids {_pct(a)}",
        ]
        text = "; ".join(parts) + "."
        if self.local_mode:
            text += " Qdrant was measured in embedded local mode (pure-Python exact search), not a Qdrant server."
        return text

    def reading(self) -> list[str]:
        """A short written reading of the numbers (Markdown paragraphs)."""
        out: list[str] = []
        ce, qe = self.engines.get("chroma", {}), self.engines.get("qdrant", {})
        out.append(
            f"**What was measured.** Chroma: {ce.get('description', 'n/a')}. Qdrant: {qe.get('description', 'n/a')}."
        )
        if self.local_mode:
            out.append(f"**Read this first.** {LOCAL_MODE_DISCLAIMER}")
        if self.problem:
            out.append(f"**Nothing measured.** {self.problem}")
            return out
        w = self.workload
        filt = f", filtered on equality of metadata key `{w['filter_key']}`" if w.get("filter_key") else ""
        out.append(
            f"**Workload.** {w.get('queries')} queries per collection (+{w.get('warmup')} warm-ups, not counted) on "
            f"{len(self.measured)} collection(s), top-{w.get('k')}{filt}; half use a stored vector, half a "
            f"perturbed copy; each query returns {RETURNED_FIELDS} in both stores."
        )
        c, q = self.overall("chroma"), self.overall("qdrant")
        if c.get("p50_ms") is not None and q.get("p50_ms") is not None:
            faster = "Qdrant" if q["p50_ms"] < c["p50_ms"] else "Chroma"
            out.append(
                f"**Latency.** Median query latency is {_ms(c['p50_ms'])} ms on Chroma and {_ms(q['p50_ms'])} ms on "
                f"Qdrant, {_relative(c['p50_ms'], q['p50_ms'], lower_is_better=True)}; p95 {_ms(c.get('p95_ms'))} vs "
                f"{_ms(q.get('p95_ms'))} ms, worst {_ms(c.get('max_ms'))} vs {_ms(q.get('max_ms'))} ms. {faster} is "
                f"faster here. The guide claims {GUIDE_LATENCY}; its figures come from a different deployment and "
                "data, so compare the direction and size of the change, not the absolute numbers."
            )
        else:
            out.append("**Latency.** At least one store answered no query, so no latency comparison is possible.")
        if self.sweep:
            levels = self.sweep_info.get("levels", [])
            parts = []
            for store in STORES:
                level = self.max_held(store)
                parts.append(
                    f"{STORE_LABELS[store]} held "
                    + (f"{level} concurrent callers" if level is not None else "no level")
                    + f" under 1 % errors (peak {_num(self.peak_qps(store))} queries/s)"
                )
            out.append(
                f"**Concurrency.** Levels {', '.join(str(x) for x in levels)} concurrent callers, "
                f"{self.sweep_info.get('level_seconds')} s per level and store: {'; '.join(parts)}. "
                "Only the levels tested are evidence: the guide's "
                f"'{GUIDE_CONCURRENCY}' is checked up to {max(levels) if levels else 0} callers. "
                + self._p95_at_top()
                + f"{self.sweep_info.get('note', '')}"
            )
        elif self.sweep_info.get("levels"):
            out.append("**Concurrency.** The sweep was interrupted before any level finished: no concurrency figures.")
        err_parts = []
        for store in STORES:
            e = self.errors.get(store, {})
            text = f"{STORE_LABELS[store]}: {_errors(e)}"
            samples = e.get("samples") or []
            if samples:
                text += " — " + "; ".join(f"`{s['message']}` ×{s['count']}" for s in samples[:3])
            err_parts.append(text)
        out.append(
            "**Errors.** " + " · ".join(err_parts) + ". Every failed or timed-out query is counted, none retried."
        )
        a = self.agreement.get("overall", {})
        if a.get("compared"):
            out.append(
                f"**Result agreement.** {_pct(a.get('share_same_ids'))} of {a['compared']} queries returned the same "
                f"top-{w.get('k')} ids in both stores (same order {_pct(a.get('share_same_order'))}, mean overlap "
                f"{_pct(a.get('mean_overlap'))}). Chroma searches an approximate HNSW index"
                + (" and Qdrant's local mode searches exactly" if self.local_mode else ", and so does a Qdrant server")
                + ", so a small disagreement is expected (and ties may order differently); a large one points to a "
                "data or mapping problem: run the verify step."
            )
        if self.watch.get("enabled"):
            wv = self.watch
            unhealthy = wv.get("unhealthy_probes", 0)
            out.append(
                f"**Watch.** {wv.get('probes_done', 0)} probe(s) over {wv.get('elapsed_s', 0):.0f} s "
                f"(every {wv.get('interval_s')} s, stopped by {wv.get('stopped')}); {unhealthy} unhealthy probe(s) "
                f"(connection failed, counts changed or queries failed). "
                + ("All probes healthy." if not unhealthy else "See the watch table and chart.")
            )
        small = [c.source for c in self.measured if (c.source_count or 0) < 5_000]
        if small and len(small) == len(self.measured):
            out.append(
                "**Scale.** Every collection measured has fewer than 5,000 records: latency here is mostly per-call "
                "overhead, not search work; expect different figures on production-sized collections."
            )
        if self.interrupted:
            out.append(f"**Interrupted** during the {self.interrupted} phase: the figures cover what ran until then.")
        return out

    def _p95_at_top(self) -> str:
        levels = [r["concurrency"] for r in self.sweep]
        if not levels:
            return ""
        top = max(levels)
        p95 = {r["store"]: r["p95_ms"] for r in self.sweep if r["concurrency"] == top}
        return (
            f"At {top} callers p95 latency was {_ms(p95.get('chroma'))} ms on Chroma and {_ms(p95.get('qdrant'))} ms "
            "on Qdrant: a level can be held without errors and still be slow. "
        )

    def reading_md(self) -> str:
        return "\n\n".join(self.reading())

    # --- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "disclaimer": self.disclaimer,
            "local_mode": self.local_mode,
            "engines": self.engines,
            "workload": self.workload,
            "collections": [c.to_dict() for c in self.collections],
            "comparison": self.comparison(),
            "sequential": self.sequential,
            "agreement": self.agreement,
            "concurrency": {
                **self.sweep_info,
                "rows": self.sweep,
                "max_held": {s: self.max_held(s) for s in STORES},
                "peak_qps": {s: self.peak_qps(s) for s in STORES},
            },
            "watch": self.watch,
            "errors": self.errors,
            "reading": self.reading(),
            "warnings": self.warnings,
            "interrupted": self.interrupted,
            "seconds": round(self.seconds, 3),
            "figures": self.figures,
            "sequential_latencies_ms": self.latencies_ms,
        }

    # --- notebook helpers (DataFrames) -----------------------------------------------------------
    def comparison_table(self) -> Any:
        import pandas as pd

        df = pd.DataFrame(self.comparison())
        if df.empty:
            return df
        return df.set_index("metric").rename(
            columns={"guide": "guide (claim)", "chroma": "Chroma (measured)", "qdrant": "Qdrant (measured)"}
        )

    def latency_table(self) -> Any:
        import pandas as pd

        rows = []
        per = self.sequential.get("per_collection", {})
        for name, by_store in [*per.items(), ("(all collections)", self.sequential.get("overall", {}))]:
            for store in STORES:
                stats = by_store.get(store)
                if stats:
                    rows.append({"collection": name, "store": STORE_LABELS[store], **stats})
        return pd.DataFrame(rows).set_index(["collection", "store"]) if rows else pd.DataFrame()

    def sweep_table(self) -> Any:
        import pandas as pd

        rows = [{k: v for k, v in r.items() if k != "error_samples"} for r in self.sweep]
        if not rows:
            return pd.DataFrame()
        df = pd.DataFrame(rows)
        df["store"] = df["store"].map(STORE_LABELS)
        return df.set_index(["concurrency", "store"]).sort_index()

    def agreement_table(self) -> Any:
        import pandas as pd

        per = self.agreement.get("per_collection", {})
        rows = [{"collection": n, **v} for n, v in per.items()]
        if self.agreement.get("overall"):
            rows.append({"collection": "(all collections)", **self.agreement["overall"]})
        return pd.DataFrame(rows).set_index("collection") if rows else pd.DataFrame()

    def collections_table(self) -> Any:
        import pandas as pd

        rows = [c.to_dict() for c in self.collections]
        return pd.DataFrame(rows).set_index("source") if rows else pd.DataFrame()

    def watch_table(self) -> Any:
        import pandas as pd

        rows = []
        for p in self.watch.get("probes", []):
            for store in STORES:
                e = p["stores"].get(store)
                if e is None:
                    continue
                rows.append(
                    {
                        "probe": p["index"],
                        "t_s": p["t_s"],
                        "at": p["at"],
                        "store": STORE_LABELS[store],
                        "healthy": e["healthy"],
                        "connection_ok": e["connection_ok"],
                        "counts_unchanged": e["counts_unchanged"],
                        "queries": e["queries"],
                        "errors": e["errors"],
                        "timeouts": e["timeouts"],
                        "p50_ms": e["p50_ms"],
                        "p95_ms": e["p95_ms"],
                        "max_ms": e["max_ms"],
                    }
                )
        return pd.DataFrame(rows).set_index(["probe", "store"]) if rows else pd.DataFrame()

    def errors_table(self) -> Any:
        import pandas as pd

        rows = []
        for store in STORES:
            for phase, e in self.errors.get(store, {}).get("by_phase", {}).items():
                rows.append(
                    {
                        "store": STORE_LABELS[store],
                        "phase": phase,
                        "queries": e["queries"],
                        "errors": e["errors"],
                        "timeouts": e["timeouts"],
                        "error_rate": e["error_rate"],
                        "messages": "; ".join(f"{s['message']} ×{s['count']}" for s in e["samples"]),
                    }
                )
        return pd.DataFrame(rows).set_index(["store", "phase"]) if rows else pd.DataFrame()


def _ms(v: float | None) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3g}" if v < 10 else f"{v:,.1f}"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * float(v):.1f} %"


def _relative(chroma: float | None, qdrant: float | None, *, lower_is_better: bool) -> str:
    """Qdrant relative to Chroma, e.g. "−44 % (Qdrant better)"."""
    if chroma is None or qdrant is None or chroma <= 0:
        return "n/a"
    change = (qdrant - chroma) / chroma * 100.0
    if abs(change) < 0.5:
        return "±0 %"
    better = (change < 0) == lower_is_better
    sign = "−" if change < 0 else "+"
    return f"{sign}{abs(change):.0f} % (Qdrant {'better' if better else 'worse'})"


def _errors(e: dict[str, Any]) -> str:
    if not e or not e.get("queries"):
        return "n/a"
    failed = e["errors"] + e["timeouts"]
    return f"{failed:,} of {e['queries']:,} ({_pct(e['error_rate'])})"


# --- the step ------------------------------------------------------------------------------------
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
    source = ChromaSource.open(step.settings.chroma)
    try:
        if source.upgraded_on_open:
            result.warnings.append(
                "The source was written by an older chromadb: the scratch copy was upgraded to read it; the live "
                "directory is untouched."
            )
        with QdrantTarget(step.settings.qdrant) as target:
            chroma, qdrant = ChromaStore(source), QdrantStore(target)
            stores: dict[str, Store] = {"chroma": chroma, "qdrant": qdrant}
            result.engines = {"chroma": chroma.engine(), "qdrant": qdrant.engine()}
            if target.is_local:
                log.warning("Qdrant is qdrant-client's embedded local mode: its figures are not a server's.")
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
                        source, c, queries=p.queries, warmup=p.warmup, seed=p.seed, filter_key=p.filter_key
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
    log.info("monitor: %s", result.verdict)
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
    _collect(result, runs, tallies, levels, watch, p)


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


def _collect(
    result: MonitorResult,
    runs: list[SequentialRun],
    tallies: dict[str, dict[str, Tally]],
    levels: list[LevelResult],
    watch: WatchRun | None,
    p: MonitorParams,
) -> None:
    per_collection: dict[str, dict[str, Any]] = {}
    overall: dict[str, Tally] = {s: Tally() for s in STORES}
    result.latencies_ms = {s: {} for s in STORES}
    for run in runs:
        per_collection[run.collection] = {}
        for store in STORES:
            tally = tallies[store]["sequential:" + run.collection]
            per_collection[run.collection][store] = tally.stats()
            overall[store].merge(tally)
            result.latencies_ms[store][run.collection] = [round(x, 3) for x in tally.latencies_ms]
    result.sequential = {
        "overall": {s: overall[s].stats() for s in STORES} if runs else {},
        "per_collection": per_collection,
        "order": "queries run one at a time; which store goes first alternates per query",
    }
    result.agreement = {
        "overall": agreement(runs) if runs else {},
        "per_collection": {run.collection: agreement([run]) for run in runs},
    }
    result.sweep = [lv.to_dict() for lv in levels]
    if watch is not None:
        probes = [pr.to_dict() for pr in watch.probes]
        unhealthy = sum(1 for pr in probes if not all(e["healthy"] for e in pr["stores"].values()))
        result.watch = {
            "enabled": True,
            "duration_s": watch.duration_s,
            "interval_s": watch.interval_s,
            "elapsed_s": round(watch.elapsed_s, 3),
            "stopped": watch.stopped,
            "probes_done": len(probes),
            "unhealthy_probes": unhealthy,
            "overruns": watch.overruns,
            "probes": probes,
        }
    elif p.duration_s > 0:
        result.watch = {
            "enabled": True,
            "duration_s": p.duration_s,
            "interval_s": p.interval_s,
            "probes_done": 0,
            "stopped": "not started",
            "elapsed_s": 0.0,
            "unhealthy_probes": 0,
            "probes": [],
        }
    for store in STORES:
        by_phase: dict[str, dict[str, Any]] = {}
        if runs:
            by_phase["sequential"] = _phase(overall[store])
        if levels:
            sweep = Tally()
            for lv in (lv for lv in levels if lv.store == store):
                sweep.merge(lv.tally)
                sweep.timeouts += lv.abandoned
            rows = [r for r in result.sweep if r["store"] == store]
            by_phase["sweep"] = _phase(
                sweep, queries=sum(r["queries"] for r in rows), timeouts=sum(r["timeouts"] for r in rows)
            )
        if watch is not None and watch.probes:
            watched = Tally()
            queries = 0
            for pr in watch.probes:
                entry = pr.stores[store]
                queries += entry["queries"]
                watched.errors += entry["errors"]
                watched.timeouts += entry["timeouts"]
                for sample in entry["error_samples"]:
                    watched.messages[sample["message"]] += sample["count"]
            by_phase["watch"] = _phase(watched, queries=queries)
        result.errors[store] = _store_errors(by_phase)


def _phase(tally: Tally, *, queries: int | None = None, timeouts: int | None = None) -> dict[str, Any]:
    """Errors of one store in one phase."""
    stats = tally.stats()
    n = stats["queries"] if queries is None else queries
    t = stats["timeouts"] if timeouts is None else timeouts
    return {
        "queries": n,
        "errors": stats["errors"],
        "timeouts": t,
        "error_rate": round((stats["errors"] + t) / n, 6) if n else None,
        "samples": tally.samples(),
    }


def _store_errors(by_phase: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Errors of one store over every phase."""
    queries = sum(e["queries"] for e in by_phase.values())
    errors = sum(e["errors"] for e in by_phase.values())
    timeouts = sum(e["timeouts"] for e in by_phase.values())
    messages: Counter[str] = Counter()
    for e in by_phase.values():
        for sample in e["samples"]:
            messages[sample["message"]] += sample["count"]
    return {
        "queries": queries,
        "errors": errors,
        "timeouts": timeouts,
        "error_rate": round((errors + timeouts) / queries, 6) if queries else None,
        "by_phase": by_phase,
        "samples": [{"message": m, "count": n} for m, n in messages.most_common(5)],
    }


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

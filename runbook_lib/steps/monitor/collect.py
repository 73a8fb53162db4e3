"""Filing the monitor's raw measurements into its result: statistics, agreement, sweep rows, watch and errors.

:func:`collect` turns what the phases ran (sequential runs, sweep levels, the watch) into the figures of a
:class:`~runbook_lib.steps.monitor.result.MonitorResult`; the errors of each store are totalled by phase.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from runbook_lib.config.params import MonitorParams
from runbook_lib.steps.monitor.measure import LevelResult, SequentialRun, Tally, agreement
from runbook_lib.steps.monitor.result import MonitorResult
from runbook_lib.steps.monitor.stores import STORES
from runbook_lib.steps.monitor.watch import WatchRun


def collect(
    result: MonitorResult,
    runs: list[SequentialRun],
    tallies: dict[str, dict[str, Tally]],
    levels: list[LevelResult],
    watch: WatchRun | None,
    p: MonitorParams,
) -> None:
    """Fill ``result``'s sequential statistics, agreement, sweep rows, watch summary and errors per store."""
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

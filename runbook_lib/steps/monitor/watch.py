"""The monitor's watch mode: a probe every ``interval_s`` (health, latency and errors of both stores) until the
duration is reached or the kernel is interrupted.

A probe checks each store's connection and collection counts (against the first probe) and runs one pass
of the workload, counting errors and timeouts by the rules of :mod:`runbook_lib.steps.monitor.measure`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from runbook_lib.app.metrics import AppMetrics
from runbook_lib.steps.monitor.measure import Tally, run_one
from runbook_lib.steps.monitor.stores import STORES, Store, short_error
from runbook_lib.steps.monitor.workload import Query

log = logging.getLogger(__name__)


@dataclass
class Probe:
    """One watch-mode probe: health and a pass of the workload against both stores."""

    index: int
    t_s: float
    at: str
    stores: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "t_s": round(self.t_s, 3), "at": self.at, "stores": self.stores}


def probe(
    index: int,
    t_s: float,
    stores: Mapping[str, Store],
    counts_names: Mapping[str, Mapping[str, str]],
    queries: Sequence[Query],
    k: int,
    timeout_s: float,
    baseline: dict[str, dict[str, int | None]] | None,
    metrics: AppMetrics | None = None,
) -> Probe:
    """Health (connection, collection counts vs the first probe) and latency of one pass of ``queries``.

    A probe is healthy when the store answered its ping, every collection could be counted and its count
    equals the first probe's, and no query failed or timed out.

    ``counts_names`` maps store -> {source collection: name to count in that store}.
    """
    at = datetime.now(UTC).isoformat(timespec="seconds")
    result: dict[str, dict[str, Any]] = {}
    for key, store in stores.items():
        entry: dict[str, Any] = {"connection_ok": True, "connection_error": None}
        try:
            store.ping()
        except Exception as exc:
            entry["connection_ok"], entry["connection_error"] = False, short_error(exc)
        counts: dict[str, int | None] = {}
        for source_name, name in counts_names[key].items():
            try:
                counts[source_name] = store.count(name)
            except Exception:
                counts[source_name] = None
        entry["counts"] = counts
        first = baseline.get(key) if baseline is not None else None
        changed = sorted(n for n, c in counts.items() if first is not None and first.get(n) != c)
        entry["counts_unchanged"] = not changed
        entry["counts_changed"] = changed
        entry["counts_failed"] = sorted(n for n, c in counts.items() if c is None)
        result[key] = entry
    tallies = {key: Tally() for key in stores}
    order = [key for key in STORES if key in stores]
    for n, q in enumerate(queries):
        for key in order if n % 2 == 0 else reversed(order):
            if metrics is None:
                tallies[key].add(run_one(stores[key], q, k, timeout_s))
                continue
            # the same series the app's VectorDBClient records, so one dashboard shows both
            with metrics.track(key, q.collection, "search") as call:
                outcome = run_one(stores[key], q, k, timeout_s)
                if outcome.latency_ms is None:
                    call.fail("other")
                elif outcome.timeout:
                    call.fail("timeout")
            tallies[key].add(outcome)
    for key, tally in tallies.items():
        stats = tally.stats()
        result[key].update(
            queries=stats["queries"],
            errors=stats["errors"],
            timeouts=stats["timeouts"],
            error_rate=stats["error_rate"],
            p50_ms=stats["p50_ms"],
            p95_ms=stats["p95_ms"],
            max_ms=stats["max_ms"],
            mean_ms=stats["mean_ms"],
            error_samples=tally.samples(),
        )
        result[key]["healthy"] = bool(
            result[key]["connection_ok"]
            and result[key]["counts_unchanged"]
            and not result[key]["counts_failed"]
            and not (stats["error_rate"] or 0)
        )
    return Probe(index=index, t_s=t_s, at=at, stores=result)


@dataclass
class WatchRun:
    duration_s: float
    interval_s: float
    probes: list[Probe] = field(default_factory=list)
    stopped: str = "duration"  # "duration" | "interrupted" | "error"
    elapsed_s: float = 0.0
    overruns: int = 0  # probes that took longer than the interval


def run_watch(
    stores: Mapping[str, Store],
    counts_names: Mapping[str, Mapping[str, str]],
    queries: Sequence[Query],
    k: int,
    timeout_s: float,
    *,
    duration_s: float,
    interval_s: float,
    before_probe: Callable[[int], None] | None = None,
    after_probe: Callable[[Probe], None] | None = None,
    metrics: AppMetrics | None = None,
) -> WatchRun:
    """Probe every ``interval_s`` until ``duration_s`` has passed (a probe is never started after the
    duration) or KeyboardInterrupt (Jupyter's interrupt). Either way the probes so far are returned.

    ``metrics``: the probes are also recorded as the app wrapper's Prometheus metrics (latency per backend,
    collection and operation; errors by kind; in flight), exposed on ``VECTOR_DB_METRICS_PORT`` when it is set."""
    watch = WatchRun(duration_s=duration_s, interval_s=interval_s)
    t0 = time.monotonic()
    baseline: dict[str, dict[str, int | None]] | None = None
    next_at = t0
    try:
        while next_at - t0 < duration_s:
            wait = next_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            index = len(watch.probes)
            if before_probe is not None:
                before_probe(index)
            p = probe(index, time.monotonic() - t0, stores, counts_names, queries, k, timeout_s, baseline, metrics)
            if baseline is None:
                baseline = {key: dict(entry["counts"]) for key, entry in p.stores.items()}
            watch.probes.append(p)
            if after_probe is not None:
                after_probe(p)
            next_at += interval_s
            if time.monotonic() > next_at:  # the probe took longer than the interval: start the next one now
                watch.overruns += 1
                next_at = time.monotonic()
    except KeyboardInterrupt:
        watch.stopped = "interrupted"
        log.info("watch interrupted after %d probes", len(watch.probes))
    watch.elapsed_s = time.monotonic() - t0
    return watch

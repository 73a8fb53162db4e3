"""The monitor's measurements: latency statistics, sequential latency, result agreement and the concurrency sweep.

Rules, the same in every phase (watch mode, :mod:`runbook_lib.steps.monitor.watch`, follows them too):

* A query that raises is an **error**: it is counted (with its message) and the run goes on.
* A query that returns but takes longer than ``timeout_s`` is a **timeout**: counted as an error, and its
  latency still enters the percentiles (it was measured). In the sweep, a query still running
  ``timeout_s`` after the level's end is abandoned and counted as a timeout.
* Latency percentiles are over the queries that returned; error rates over every query attempted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runbook_lib.steps.monitor.stores import STORES, Store, short_error
from runbook_lib.steps.monitor.workload import Query

log = logging.getLogger(__name__)

#: How many distinct error messages are kept per store and phase.
MAX_ERROR_SAMPLES = 5


# --- statistics ----------------------------------------------------------------------------------
def latency_stats(latencies_ms: Sequence[float], *, errors: int = 0, timeouts: int = 0) -> dict[str, Any]:
    """Count, error rate and p50/p95/p99/max/mean/min (ms) of a set of latencies.

    ``errors`` are queries that raised (not in ``latencies_ms``); ``timeouts`` are queries in
    ``latencies_ms`` (or abandoned) that exceeded the time limit. Percentiles interpolate linearly between
    measured values, so p50 <= p95 <= p99 <= max always holds; they are None when nothing returned.
    """
    arr = np.asarray(latencies_ms, dtype=np.float64)
    returned = int(arr.size)
    attempted = returned + errors
    failed = errors + timeouts
    stats: dict[str, Any] = {
        "queries": attempted,
        "ok": max(0, returned - timeouts),
        "errors": errors,
        "timeouts": timeouts,
        "error_rate": round(failed / attempted, 6) if attempted else None,
        "p50_ms": None,
        "p95_ms": None,
        "p99_ms": None,
        "max_ms": None,
        "mean_ms": None,
        "min_ms": None,
    }
    if returned:
        p50, p95, p99 = np.percentile(arr, [50, 95, 99])
        stats.update(
            p50_ms=round(float(p50), 3),
            p95_ms=round(float(p95), 3),
            p99_ms=round(float(p99), 3),
            max_ms=round(float(arr.max()), 3),
            mean_ms=round(float(arr.mean()), 3),
            min_ms=round(float(arr.min()), 3),
        )
    return stats


@dataclass
class Outcome:
    """One query against one store."""

    latency_ms: float | None  # None when it raised
    ids: list[str] | None
    error: str | None = None
    timeout: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and not self.timeout


def run_one(store: Store, q: Query, k: int, timeout_s: float) -> Outcome:
    t0 = time.perf_counter()
    try:
        ids = store.query(q, k)
    except Exception as exc:
        return Outcome(None, None, short_error(exc))
    ms = (time.perf_counter() - t0) * 1000.0
    return Outcome(ms, ids, timeout=ms > timeout_s * 1000.0)


@dataclass
class Tally:
    """Latencies and error counts of one store in one phase (or one probe)."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    timeouts: int = 0
    messages: Counter[str] = field(default_factory=Counter)

    def add(self, o: Outcome) -> None:
        if o.latency_ms is not None:
            self.latencies_ms.append(o.latency_ms)
        else:
            self.errors += 1
        if o.timeout:
            self.timeouts += 1
            self.messages["timeout: slower than timeout_s"] += 1
        if o.error:
            self.messages[o.error] += 1

    def merge(self, other: Tally) -> None:
        self.latencies_ms.extend(other.latencies_ms)
        self.errors += other.errors
        self.timeouts += other.timeouts
        self.messages.update(other.messages)

    def stats(self) -> dict[str, Any]:
        return latency_stats(self.latencies_ms, errors=self.errors, timeouts=self.timeouts)

    def samples(self) -> list[dict[str, Any]]:
        return [{"message": m, "count": n} for m, n in self.messages.most_common(MAX_ERROR_SAMPLES)]


# --- sequential latency --------------------------------------------------------------------------
@dataclass
class SequentialRun:
    """Every query of one collection against both stores, one at a time."""

    collection: str
    queries: list[Query]
    outcomes: dict[str, list[Outcome]]  # store -> outcome per measured query (warm-ups excluded)
    interrupted: bool = False  # KeyboardInterrupt stopped it; the outcomes cover the queries finished

    def tally(self, store: str) -> Tally:
        t = Tally()
        for o in self.outcomes[store]:
            t.add(o)
        return t


def run_sequential(
    stores: Mapping[str, Store],
    queries: Sequence[Query],
    k: int,
    timeout_s: float,
    *,
    on_query: Callable[[], None] | None = None,
) -> SequentialRun:
    """Run the queries of one collection one at a time, alternating which store goes first.

    Warm-up queries run first and are discarded. Alternating the order per query spreads any drift
    (caches, CPU frequency) evenly over both stores.
    """
    outcomes: dict[str, list[Outcome]] = {key: [] for key in stores}
    order = [key for key in STORES if key in stores]
    measured: list[Query] = []
    interrupted = False
    try:
        for n, q in enumerate(queries):
            for key in order if n % 2 == 0 else reversed(order):
                o = run_one(stores[key], q, k, timeout_s)
                if not q.warmup:
                    outcomes[key].append(o)
            if not q.warmup:
                measured.append(q)
            if on_query is not None:
                on_query()
    except KeyboardInterrupt:
        interrupted = True
        done = len(measured)  # a query only one store ran is dropped, so the stores stay comparable
        outcomes = {key: v[:done] for key, v in outcomes.items()}
    return SequentialRun(
        collection=queries[0].collection if queries else "",
        queries=measured,
        outcomes=outcomes,
        interrupted=interrupted,
    )


def agreement(runs: Sequence[SequentialRun]) -> dict[str, Any]:
    """How often both stores returned the same top-k Chroma ids (as sets), over queries both answered."""
    compared = same = same_order = 0
    overlaps: list[float] = []
    for run in runs:
        for a, b in zip(run.outcomes.get("chroma", []), run.outcomes.get("qdrant", []), strict=True):
            if a.ids is None or b.ids is None:
                continue
            compared += 1
            sa, sb = set(a.ids), set(b.ids)
            same += sa == sb
            same_order += a.ids == b.ids
            overlaps.append(len(sa & sb) / max(len(sa), len(sb), 1))
    return {
        "compared": compared,
        "same_ids": same,
        "share_same_ids": round(same / compared, 6) if compared else None,
        "share_same_order": round(same_order / compared, 6) if compared else None,
        "mean_overlap": round(float(np.mean(overlaps)), 6) if overlaps else None,
    }


# --- concurrency sweep ---------------------------------------------------------------------------
@dataclass
class LevelResult:
    store: str
    concurrency: int
    seconds: float
    tally: Tally
    abandoned: int = 0

    def to_dict(self) -> dict[str, Any]:
        stats = self.tally.stats()
        return {
            "store": self.store,
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 3),
            "queries": stats["queries"] + self.abandoned,
            "ok": stats["ok"],
            "errors": stats["errors"],
            "timeouts": stats["timeouts"] + self.abandoned,
            "abandoned": self.abandoned,
            "error_rate": _rate(
                stats["errors"] + stats["timeouts"] + self.abandoned, stats["queries"] + self.abandoned
            ),
            "qps": round(stats["ok"] / self.seconds, 3) if self.seconds > 0 else None,
            "p50_ms": stats["p50_ms"],
            "p95_ms": stats["p95_ms"],
            "p99_ms": stats["p99_ms"],
            "max_ms": stats["max_ms"],
            "mean_ms": stats["mean_ms"],
            "error_samples": self.tally.samples(),
        }


def _rate(failed: int, attempted: int) -> float | None:
    return round(failed / attempted, 6) if attempted else None


def run_level(
    store: Store,
    queries: Sequence[Query],
    k: int,
    *,
    concurrency: int,
    seconds: float,
    timeout_s: float,
) -> LevelResult:
    """``concurrency`` threads send queries back to back for ``seconds``; each takes the next query of the
    shared list (round robin). Returns throughput, latency and errors. A thread still busy ``timeout_s``
    after the end is abandoned (its query counted as a timeout) so a hung store cannot hang the sweep."""
    if not queries:
        return LevelResult(store.key, concurrency, 0.0, Tally())
    tallies = [Tally() for _ in range(concurrency)]
    next_index = iter(range(1 << 62))
    lock = threading.Lock()
    stop = threading.Event()
    start = time.perf_counter()
    deadline = start + seconds

    def worker(w: int) -> None:
        tally = tallies[w]
        while not stop.is_set() and time.perf_counter() < deadline:
            with lock:
                i = next(next_index)
            tally.add(run_one(store, queries[i % len(queries)], k, timeout_s))

    threads = [
        threading.Thread(target=worker, args=(w,), name=f"monitor-{store.key}-{w}", daemon=True)
        for w in range(concurrency)
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, deadline + timeout_s - time.perf_counter()))
    except BaseException:  # Jupyter's interrupt: let the threads finish their current query, then stop
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join(timeout=min(timeout_s, 2.0))
        raise
    stop.set()
    elapsed = time.perf_counter() - start
    abandoned = sum(1 for t in threads if t.is_alive())
    total = Tally()
    for tally in tallies:
        snapshot = Tally(list(tally.latencies_ms), tally.errors, tally.timeouts, Counter(tally.messages))
        total.merge(snapshot)
    if abandoned:
        total.messages[f"timeout: still running {timeout_s:g} s after the level ended (abandoned)"] += abandoned
        log.warning("%s: %d queries still running at concurrency %d were abandoned", store.key, abandoned, concurrency)
    return LevelResult(store.key, concurrency, min(elapsed, seconds + timeout_s), total, abandoned)


def interleave(per_collection: Sequence[Sequence[Query]]) -> list[Query]:
    """Round-robin over collections, so every stretch of the sweep touches every collection."""
    out: list[Query] = []
    longest = max((len(x) for x in per_collection), default=0)
    for i in range(longest):
        for queries in per_collection:
            if i < len(queries):
                out.append(queries[i])
    return out

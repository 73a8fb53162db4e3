"""The monitor's charts: every one titled, with labelled axes and units, one colour per store throughout.

Each function returns a matplotlib figure (or None when there is nothing to draw); the step saves it with
:meth:`runbook_lib.kernel.step.Step.save_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from runbook_lib.kernel.display import pyplot
from runbook_lib.steps.monitor.stores import STORE_LABELS, STORES

COLORS: dict[str, str] = {"chroma": "#dd8452", "qdrant": "#4c72b0"}
MARKERS: dict[str, str] = {"chroma": "o", "qdrant": "s"}


def _label(store: str, engines: Mapping[str, Mapping[str, Any]]) -> str:
    kind = engines.get(store, {}).get("kind")
    return f"{STORE_LABELS[store]} ({kind})" if kind else STORE_LABELS[store]


def _footnote(fig: Any, note: str | None) -> None:
    if note:
        fig.text(0.01, -0.02, note, ha="left", va="top", fontsize=8, color="#555555", wrap=True)


def latency_cdf(
    latencies: Mapping[str, Sequence[float]], engines: Mapping[str, Mapping[str, Any]], note: str | None
) -> Any | None:
    """Cumulative distribution of sequential query latency, one line per store (log-scaled ms)."""
    if not any(len(v) for v in latencies.values()):
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for store in STORES:
        values = np.sort(np.asarray(latencies.get(store, []), dtype=float))
        if values.size == 0:
            continue
        share = np.arange(1, values.size + 1) / values.size * 100.0
        ax.step(values, share, where="post", color=COLORS[store], label=f"{_label(store, engines)}, n={values.size}")
        for pct, style in ((50, ":"), (95, "--")):
            ax.axvline(float(np.percentile(values, pct)), color=COLORS[store], linestyle=style, linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("query latency (ms, log scale)")
    ax.set_ylabel("queries answered within that time (%)")
    ax.set_ylim(0, 101)
    ax.set_title("Sequential query latency distribution (CDF); dotted p50, dashed p95")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    _footnote(fig, note)
    fig.tight_layout()
    return fig


def percentiles_per_collection(
    per_collection: Mapping[str, Mapping[str, Mapping[str, Any]]],
    engines: Mapping[str, Mapping[str, Any]],
    note: str | None,
) -> Any | None:
    """p50 / p95 / p99 of each collection, the two stores side by side (horizontal bars)."""
    names = [n for n, stats in per_collection.items() if any(stats.get(s, {}).get("p50_ms") for s in STORES)]
    if not names:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, max(3.0, 0.55 * len(names) + 1.8)), sharey=True)
    y = np.arange(len(names))
    height = 0.38
    for ax, pct in zip(axes, ("p50", "p95", "p99"), strict=True):
        for offset, store in zip((-height / 2, height / 2), STORES, strict=True):
            values = [per_collection[n].get(store, {}).get(f"{pct}_ms") or 0.0 for n in names]
            ax.barh(y + offset, values, height=height, color=COLORS[store], label=_label(store, engines))
        ax.set_title(f"{pct} query latency per collection")
        ax.set_xlabel("latency (ms)")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names)
    axes[0].set_ylabel("collection")
    axes[0].invert_yaxis()
    axes[-1].legend(loc="lower right", fontsize=8)
    fig.suptitle("Sequential latency percentiles per collection (same queries in both stores)")
    _footnote(fig, note)
    fig.tight_layout()
    return fig


def concurrency_sweep(
    rows: Sequence[Mapping[str, Any]],
    engines: Mapping[str, Mapping[str, Any]],
    note: str | None,
    level_seconds: float | None = None,
) -> Any | None:
    """Throughput, p95 latency and error rate against the number of concurrent callers."""
    if not rows:
        return None
    plt = pyplot()
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    levels = sorted({int(r["concurrency"]) for r in rows})
    for store in STORES:
        mine = sorted((r for r in rows if r["store"] == store), key=lambda r: r["concurrency"])
        if not mine:
            continue
        x = [r["concurrency"] for r in mine]
        label = _label(store, engines)
        ax1.plot(x, [r["qps"] or 0.0 for r in mine], marker=MARKERS[store], color=COLORS[store], label=label)
        ax2.plot(
            x,
            [r["p95_ms"] if r["p95_ms"] is not None else np.nan for r in mine],
            marker=MARKERS[store],
            color=COLORS[store],
        )
        ax3.plot(
            x, [100.0 * (r["error_rate"] or 0.0) for r in mine], marker=MARKERS[store], color=COLORS[store], label=label
        )
    for ax in (ax1, ax2, ax3):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels)
        ax.set_xticklabels([str(v) for v in levels])
        ax.set_xlabel("concurrent callers (threads)")
        ax.grid(True, alpha=0.3)
    ax1.set_ylabel("throughput (successful queries/s)")
    ax1.set_title("Throughput against concurrency")
    ax1.set_ylim(bottom=0)
    ax1.legend(fontsize=8)
    p95s = [float(r["p95_ms"]) for r in rows if r["p95_ms"]]
    if p95s and max(p95s) / min(p95s) > 50:
        ax2.set_yscale("log")
        ax2.set_ylabel("p95 latency (ms, log scale)")
    else:
        ax2.set_ylabel("p95 latency (ms)")
        ax2.set_ylim(bottom=0)
    ax2.set_title("p95 latency against concurrency")
    ax3.set_ylabel("errors + timeouts (% of queries)")
    ax3.set_title("Error rate against concurrency (1 % line dashed)")
    ax3.axhline(1.0, color="#c44e52", linestyle="--", linewidth=0.8)
    ax3.set_ylim(bottom=0, top=max(5.0, ax3.get_ylim()[1]))
    per_level = f" ({level_seconds:g} s per level and store)" if level_seconds else ""
    fig.suptitle(f"Concurrency sweep: concurrent callers sending queries back to back{per_level}")
    _footnote(fig, note)
    fig.tight_layout()
    return fig


def watch_over_time(
    probes: Sequence[Mapping[str, Any]], engines: Mapping[str, Mapping[str, Any]], note: str | None
) -> Any | None:
    """Watch mode: p50/p95 latency and error rate of each probe over time, unhealthy probes marked."""
    if not probes:
        return None
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True)
    long_run = probes[-1]["t_s"] > 3 * 3600
    scale, unit = (3600.0, "h") if long_run else ((60.0, "min") if probes[-1]["t_s"] > 600 else (1.0, "s"))
    for store in STORES:
        mine = [(p["t_s"] / scale, p["stores"].get(store)) for p in probes if p["stores"].get(store)]
        if not mine:
            continue
        t = [x for x, _ in mine]
        label = _label(store, engines)
        p50 = [e["p50_ms"] if e["p50_ms"] is not None else np.nan for _, e in mine]
        p95 = [e["p95_ms"] if e["p95_ms"] is not None else np.nan for _, e in mine]
        ax1.plot(t, p50, marker=MARKERS[store], markersize=3, color=COLORS[store], label=f"{label} p50")
        ax1.plot(t, p95, linestyle="--", color=COLORS[store], label=f"{label} p95")
        ax2.plot(
            t,
            [100.0 * (e["error_rate"] or 0.0) for _, e in mine],
            marker=MARKERS[store],
            markersize=4,
            color=COLORS[store],
            label=label,
        )
        bad = [x for x, e in mine if not e["healthy"]]
        if bad:
            ax2.scatter(bad, [0.0] * len(bad), marker="x", color="#c44e52", zorder=5)
    ax1.set_ylabel("latency (ms)")
    ax1.set_title("Watch mode: query latency per probe")
    ax1.set_ylim(bottom=0)
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=8, ncol=2)
    ax2.set_ylabel("errors + timeouts (% of queries)")
    ax2.set_xlabel(f"time since the watch started ({unit})")
    ax2.set_title("Watch mode: error rate per probe (x: unhealthy probe — connection failed or counts changed)")
    ax2.set_ylim(bottom=0, top=max(5.0, ax2.get_ylim()[1]))
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    _footnote(fig, note)
    fig.tight_layout()
    return fig

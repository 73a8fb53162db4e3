"""The monitor's tables and Markdown for the notebook: functions of a :class:`MonitorResult`, in the notebook's order.

Each table is a pandas DataFrame (empty when there is nothing to show). Nothing here is filed: the JSON record
is :meth:`MonitorResult.to_dict` alone, and the charts are in :mod:`runbook_lib.steps.monitor.charts`.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from runbook_lib.steps.monitor.result import MonitorResult
from runbook_lib.steps.monitor.stores import STORE_LABELS, STORES


def comparison_table(result: MonitorResult) -> pd.DataFrame:
    """The guide's comparison with the measured values, one row per metric."""
    df = pd.DataFrame(result.comparison())
    if df.empty:
        return df
    return df.set_index("metric").rename(
        columns={"guide": "guide (claim)", "chroma": "Chroma (measured)", "qdrant": "Qdrant (measured)"}
    )


def reading_md(result: MonitorResult) -> str:
    """The written reading as one Markdown text."""
    return "\n\n".join(result.reading())


def collections_table(result: MonitorResult) -> pd.DataFrame:
    """Every collection considered, measured or skipped (with the reason), one row each."""
    rows = [c.to_dict() for c in result.collections]
    return pd.DataFrame(rows).set_index("source") if rows else pd.DataFrame()


def latency_table(result: MonitorResult) -> pd.DataFrame:
    """Sequential latency statistics per collection and store, then over all collections."""
    rows: list[dict[str, Any]] = []
    per = result.sequential.get("per_collection", {})
    for name, by_store in [*per.items(), ("(all collections)", result.sequential.get("overall", {}))]:
        for store in STORES:
            stats = by_store.get(store)
            if stats:
                rows.append({"collection": name, "store": STORE_LABELS[store], **stats})
    return pd.DataFrame(rows).set_index(["collection", "store"]) if rows else pd.DataFrame()


def sweep_table(result: MonitorResult) -> pd.DataFrame:
    """The concurrency sweep, one row per level and store."""
    rows = [{k: v for k, v in r.items() if k != "error_samples"} for r in result.sweep]
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df["store"] = df["store"].map(STORE_LABELS)
    return df.set_index(["concurrency", "store"]).sort_index()


def errors_table(result: MonitorResult) -> pd.DataFrame:
    """Errors and timeouts per store and phase, with the most frequent messages."""
    rows: list[dict[str, Any]] = []
    for store in STORES:
        for phase, e in result.errors.get(store, {}).get("by_phase", {}).items():
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


def agreement_table(result: MonitorResult) -> pd.DataFrame:
    """Result agreement (same top-k ids in both stores) per collection, then over all collections."""
    per = result.agreement.get("per_collection", {})
    rows = [{"collection": n, **v} for n, v in per.items()]
    if result.agreement.get("overall"):
        rows.append({"collection": "(all collections)", **result.agreement["overall"]})
    return pd.DataFrame(rows).set_index("collection") if rows else pd.DataFrame()


def watch_table(result: MonitorResult) -> pd.DataFrame:
    """Watch mode, one row per probe and store (empty without a watch)."""
    rows: list[dict[str, Any]] = []
    for p in result.watch.get("probes", []):
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

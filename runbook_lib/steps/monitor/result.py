"""The monitor's result: every figure measured, for both stores, and its one JSON form.

:class:`MonitorResult` is data. Besides the measured figures it derives what the filed record states about
them (the guide's comparison, the verdict and the written reading, all part of :meth:`MonitorResult.to_dict`);
the tables and Markdown the notebook shows are in :mod:`runbook_lib.steps.monitor.report`, the charts in
:mod:`runbook_lib.steps.monitor.charts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runbook_lib.steps.monitor.stores import LOCAL_MODE_DISCLAIMER, RETURNED_FIELDS, STORE_LABELS, STORES
from runbook_lib.steps.monitor.workload import MonitoredCollection

#: A concurrency level is "held" when fewer than this share of its queries failed or timed out.
HELD_ERROR_RATE = 0.01

#: The guide's claims, shown next to the measured values.
GUIDE_LATENCY = "320 ms → 180 ms (−44 %)"
GUIDE_CONCURRENCY = "10 → 100+"


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

    # --- written summary (filed in the JSON record) -----------------------------------------------
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

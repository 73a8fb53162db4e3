"""The verify step's result, as data: its constants, the per-check and per-collection records, the run-wide
:class:`VerifyResult` with its verdict, and its one JSON form (``03_verify.json``: :meth:`VerifyResult.to_dict`,
:meth:`VerifyResult.from_dict`, :func:`load_result`).

No I/O besides reading the filed result back, and no presentation: the notebook's tables are in
:mod:`runbook_lib.steps.verify.report`, the charts in :mod:`runbook_lib.steps.verify.charts`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runbook_lib.errors import RunbookError, VerificationFailed
from runbook_lib.state.run import Run

#: How many ids / differences are listed per check (totals are always complete).
MAX_LISTED = 20

CHECKS = ("config", "count", "identity", "vectors", "payload", "search")
SOURCE_CHECK = "source unchanged"
PASS, FAIL, SKIPPED, NOT_RUN = "pass", "FAIL", "skipped", "not run"

#: Histogram of the max absolute difference per vector: two bins per decade from 1e-12 to 10, plus an
#: underflow bin (below 1e-12, exact zeros included) and an overflow bin (10 and above, NaN included).
HIST_EDGES = np.logspace(-12, 1, 27)

#: The SPEC's vector tolerance (max absolute component difference); a larger one is a relaxed check.
SPEC_TOLERANCE = 1e-6


@dataclass
class Check:
    """The outcome of one check on one collection."""

    name: str
    result: str = NOT_RUN
    summary: str = ""
    numbers: dict[str, Any] = field(default_factory=dict)

    def set(self, ok: bool, summary: str, **numbers: Any) -> None:
        self.result = PASS if ok else FAIL
        self.summary = summary
        self.numbers.update(numbers)

    def to_dict(self) -> dict[str, Any]:
        return {"check": self.name, "result": self.result, "summary": self.summary, "numbers": self.numbers}


class Differences:
    """The first :data:`MAX_LISTED` differences of each check, plus complete totals per check and field."""

    def __init__(self, collection: str) -> None:
        self.collection = collection
        self.listed: list[dict[str, Any]] = []
        self.totals: dict[str, int] = {}
        self.by_field: dict[str, dict[str, int]] = {}

    def add(self, check: str, record: str, fld: str, source: Any, target: Any, detail: str = "") -> None:
        self.totals[check] = self.totals.get(check, 0) + 1
        group = fld.split(".", 1)[0].split("[", 1)[0]
        counts = self.by_field.setdefault(check, {})
        counts[group] = counts.get(group, 0) + 1
        if self.totals[check] <= MAX_LISTED:
            self.listed.append(
                {
                    "collection": self.collection,
                    "check": check,
                    "id": record,
                    "field": fld,
                    "source": _shown(source),
                    "target": _shown(target),
                    "detail": detail,
                }
            )

    def first(self, check: str) -> list[dict[str, Any]]:
        return [d for d in self.listed if d["check"] == check]


def _shown(value: Any, limit: int = 300) -> Any:
    """A JSON-friendly rendering that keeps types visible (3 stays 3, 3.0 stays 3.0) and long text short."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + f"… ({len(value)} characters)"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, list | tuple) and len(value) > 40:
        return [_shown(v) for v in value[:40]] + [f"… ({len(value)} items)"]
    if isinstance(value, list | tuple):
        return [_shown(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _shown(v) for k, v in value.items()}
    return value


def _num(x: float) -> str:
    """1e-06 as ``1e-6``, 0.5 as ``0.5``."""
    return f"{x:g}".replace("e-0", "e-").replace("e+0", "e+")


@dataclass
class CollectionReport:
    collection: str
    target: str
    alias: str | None
    space: str | None = None
    distance: str | None = None
    dimension: int | None = None
    records: int = 0
    status: str = "pending"  # verified | FAILED | skipped (empty)
    error: str | None = None
    seconds: float = 0.0
    checks: dict[str, Check] = field(default_factory=lambda: {name: Check(name) for name in CHECKS})
    differences: Differences | None = None
    migrate_status: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not any(c.result == FAIL for c in self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        diffs = self.differences
        return {
            "collection": self.collection,
            "target": self.target,
            "alias": self.alias,
            "space": self.space,
            "distance": self.distance,
            "dimension": self.dimension,
            "records": self.records,
            "status": self.status,
            "ok": self.ok,
            "error": self.error,
            "migrate_status": self.migrate_status,
            "seconds": round(self.seconds, 3),
            "checks": {name: c.to_dict() for name, c in self.checks.items()},
            "difference_totals": diffs.totals if diffs else {},
            "difference_fields": diffs.by_field if diffs else {},
            "differences": diffs.listed if diffs else [],
        }


@dataclass
class VerifyResult:
    """What the verify step found. Built by :func:`verify`, or read back from ``03_verify.json``."""

    ok: bool
    run_id: str
    source_read: str
    migrated_by: str
    settings: dict[str, Any]
    collections: list[dict[str, Any]] = field(default_factory=list)
    source_unchanged: dict[str, Any] = field(default_factory=dict)
    vector_histogram: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    total_records: int = 0
    seconds: float = 0.0
    figures: list[str] = field(default_factory=list)
    #: Run-wide reasons the run is not verified (its migration failed, nothing to verify), besides collections.
    problems: list[str] = field(default_factory=list)

    # --- the one line ------------------------------------------------------------------------------
    @property
    def relaxed(self) -> list[str]:
        """How this verification is weaker than the SPEC's (empty when strict)."""
        out = []
        tol = self.settings.get("tolerance")
        if isinstance(tol, int | float) and tol > SPEC_TOLERANCE:
            out.append(f"tolerance {_num(tol)} > {_num(SPEC_TOLERANCE)}")
        check = self.settings.get("vector_check")
        if check is not None and check != "all":
            out.append(f"vectors sampled, {check} per collection")
        return out

    @property
    def verdict(self) -> str:
        verified = [c for c in self.collections if c["status"] == "verified"]
        skipped = [c for c in self.collections if c["status"].startswith("skipped")]
        if self.ok:
            k = self.settings.get("k")
            tol = self.settings.get("tolerance")
            which = "every vector" if self.settings.get("vector_check") == "all" else "sampled vectors"
            relaxed = self.relaxed
            head = f"VERIFIED (RELAXED: {'; '.join(relaxed)})" if relaxed else "VERIFIED"
            text = (
                f"{head}: {len(verified)} collection(s), {self.total_records:,} records: counts, ids, {which} "
                f"(within {tol:g}), documents, metadata and uris equal; exact top-{k} search identical with "
                "matching distances"
            )
            if skipped:
                text += f"; {len(skipped)} empty collection(s) skipped"
            if self.source_unchanged.get("result") == PASS:
                text += "; the live source is unchanged since its backup"
            return text + "."
        problems: list[str] = list(self.problems)
        for c in self.collections:
            if c["ok"]:
                continue
            if c.get("error"):
                problems.append(f"{c['collection']}: {c['error']}")
                continue
            failed = [f"{name} ({chk['summary']})" for name, chk in c["checks"].items() if chk["result"] == FAIL]
            problems.append(f"{c['collection']}: " + ", ".join(failed))
        if self.source_unchanged.get("result") == FAIL:
            problems.append(f"source changed since the backup ({self.source_unchanged.get('summary')})")
        return "NOT VERIFIED: " + "; ".join(problems) + "."

    # --- serialisation -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "run_id": self.run_id,
            "source_read": self.source_read,
            "migrated_by": self.migrated_by,
            "settings": self.settings,
            "total_records": self.total_records,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.total_records / self.seconds, 1) if self.seconds else None,
            "source_unchanged": self.source_unchanged,
            "collections": self.collections,
            "vector_histogram": self.vector_histogram,
            "warnings": self.warnings,
            "figures": self.figures,
            "problems": self.problems,
            "relaxed": self.relaxed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VerifyResult:
        if "collections" not in data:  # the step failed before it could compare anything
            raise RunbookError(f"The verify step did not finish: {data.get('error', 'no result was filed')}.")
        return cls(
            ok=bool(data["ok"]),
            run_id=data.get("run_id", ""),
            source_read=data.get("source_read", ""),
            migrated_by=data.get("migrated_by", ""),
            settings=data.get("settings", {}),
            collections=data["collections"],
            source_unchanged=data.get("source_unchanged", {}),
            vector_histogram=data.get("vector_histogram", {}),
            warnings=data.get("warnings", []),
            total_records=int(data.get("total_records", 0)),
            seconds=float(data.get("seconds", 0.0)),
            figures=data.get("figures", []),
            problems=data.get("problems", []),
        )

    # --- outcome ----------------------------------------------------------------------------------------------
    def raise_if_failed(self) -> None:
        """Raise :class:`VerificationFailed` with the verdict when anything differs (the notebook's last cell)."""
        if not self.ok:
            raise VerificationFailed(self.verdict)


def load_result(run: Run) -> VerifyResult:
    """The verify result filed in ``run`` (what the notebook shows after a failed verification)."""
    data = run.read_result("verify")
    if data is None:
        raise RunbookError(f"Run {run.run_id} has no verify result yet.")
    return VerifyResult.from_dict(data)

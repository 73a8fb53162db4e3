"""The migrate step's result, as data: :class:`MigrationResult`, its verdict, and its one JSON form
(``02_migrate.json``: :meth:`MigrationResult.to_dict`).

No I/O and no presentation: the notebook's table is in :mod:`runbook_lib.steps.migrate.report`, the chart in
:mod:`runbook_lib.steps.migrate.charts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class MigrationResult:
    ok: bool
    backup: dict[str, Any] | None
    rows: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    total_records: int = 0
    seconds: float = 0.0
    figures: list[str] = field(default_factory=list)
    #: How the source was read, when there is something to say (Chroma Cloud: within its quotas, paged until settled).
    source_read: str | None = None

    @property
    def verdict(self) -> str:
        n = len([r for r in self.rows if r["status"] == "done"])
        if self.ok:
            return (
                f"Migrated {self.total_records:,} records in {n} collections in {self.seconds:.1f} s; "
                "every count matches." + (f" {self.source_read}" if self.source_read else "")
            )
        return "Migration FAILED: " + "; ".join(self.errors)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "total_records": self.total_records,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.total_records / self.seconds, 1) if self.seconds else None,
            "backup": self.backup,
            "collections": self.rows,
            "warnings": self.warnings,
            "errors": self.errors,
            "source_read": self.source_read,
            "figures": self.figures,
        }

"""The dry-run step's result, as data: :class:`DryRunResult`, its verdict, and its one JSON form
(``01_dry_run.json``: :meth:`DryRunResult.to_dict`).

No I/O and no presentation: the notebook's tables are in :mod:`runbook_lib.steps.dry_run.report`, the chart in
:mod:`runbook_lib.steps.dry_run.charts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DryRunResult:
    ok: bool
    source: str
    target: str
    collections: list[dict[str, Any]] = field(default_factory=list)
    plan: list[dict[str, Any]] = field(default_factory=list)
    other_databases: list[dict[str, Any]] = field(default_factory=list)
    existing_targets: list[str] = field(default_factory=list)
    #: collection -> pairs of distinct Chroma ids that would share a Qdrant point (migrate refuses them)
    id_collisions: dict[str, list[list[str]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    #: existing target collection -> what its strict mode would refuse of the filters the app could send
    strict_mode: dict[str, list[str]] = field(default_factory=dict)
    total_records: int = 0
    estimated_seconds: float = 0.0
    figures: list[str] = field(default_factory=list)
    #: The source's quotas and what reading it takes (Chroma Cloud: records per request, reads in flight, requests
    #: and the expected reading time per collection); None for a directory or a server.
    source_quotas: dict[str, Any] | None = None
    #: How the Qdrant collections are named (several databases: ``<database>__<collection>``), and Qdrant Cloud's
    #: cap of 1,000 collections checked against the plan.
    naming: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        refuse = ""
        if self.id_collisions:
            names = ", ".join(repr(n) for n in self.id_collisions)
            refuse = (
                f"The migration would refuse: distinct Chroma ids share a Qdrant point id in {names} "
                "(see the warnings). "
            )
        quotas = ""
        if self.source_quotas:
            q = self.source_quotas
            quotas = (
                f" {q['source']} is read within its quotas ({q['max_records_per_request']} records per request, "
                f"{q['read_concurrency']} of {q['max_concurrent_reads_per_collection']} reads in flight per "
                f"collection): about {q['expected_requests']:,} requests and {q['expected_s']:.0f} s of reading per "
                f"step that reads it (this dry run: {q['requests']:,} requests, {q['throttled']:,} throttled)."
            )
        if self.naming.get("databases"):
            quotas += (
                f" Databases {', '.join(self.naming['databases'])}: each collection goes to Qdrant as "
                f"{self.naming['rule']}."
            )
        if self.naming and not self.naming.get("within_cap", True):
            cap = self.naming["qdrant_cloud_cap"]
            refuse += f"The migration would refuse: over Qdrant Cloud's cap of {cap:,} collections. "
        return refuse + (
            f"{len(self.collections)} collections, {self.total_records:,} records to migrate from {self.source} to "
            f"{self.target}; estimated {self.estimated_seconds / 60:.1f} min; {len(self.warnings)} warning(s)." + quotas
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "total_records": self.total_records,
            "estimated_seconds": round(self.estimated_seconds, 1),
            "collections": self.collections,
            "plan": self.plan,
            "other_databases": self.other_databases,
            "existing_targets": self.existing_targets,
            "id_collisions": self.id_collisions,
            "warnings": self.warnings,
            "strict_mode": self.strict_mode,
            "figures": self.figures,
            "source_quotas": self.source_quotas,
            "naming": self.naming,
        }

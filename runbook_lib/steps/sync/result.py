"""What a sync found and did: the plan per collection (changes on each side, conflicts) and what was applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SyncResult:
    ok: bool
    direction: str
    on_conflict: str
    applied: bool = False
    plan_only: bool = False
    collections: list[dict[str, Any]] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    snapshot: str | None = None
    previous_dir: str | None = None
    journal_replayed: int = 0
    live_stats: dict[str, list[int]] | None = None  # the live files when the source as of this sync was taken
    #: collection -> ids of the conflicts an applied sync left as they are in the store it did not write (that
    #: store's version lost); not filed (the rollback reads it to know which points may differ from the ledger)
    kept_conflicts: dict[str, list[str]] = field(default_factory=dict)

    def totals(self) -> dict[str, int]:
        out = {"source": 0, "qdrant": 0, "conflicts": 0, "applied": 0, "in_step": 0}
        for c in self.collections:
            out["source"] += sum(c["source_changes"].values())
            out["qdrant"] += sum(c["qdrant_changes"].values())
            out["conflicts"] += c["conflicts"]
            out["applied"] += c.get("applied", 0)
            out["in_step"] += c["in_step"]
        return out

    @property
    def verdict(self) -> str:
        t = self.totals()
        where = "ChromaDB → Qdrant" if self.direction == "forward" else "Qdrant → ChromaDB"
        changes = f"{t['source']} change(s) in ChromaDB, {t['qdrant']} in Qdrant, {t['conflicts']} conflict(s)"
        if self.blocked:
            return f"SYNC STOPPED before writing anything ({where}): " + "; ".join(self.blocked)
        if self.plan_only:
            return (
                f"PLAN ONLY ({where}): {changes}; {t['qdrant'] if self.direction == 'reverse' else t['source']} "
                "record(s) would be written. Nothing was changed: run again with -p confirm true to apply."
            )
        if t["applied"] == 0 and t["in_step"] == 0:
            return f"IN SYNC ({where}): nothing changed on either side since the last sync; nothing was written."
        text = f"SYNCED ({where}): {t['applied']} record(s) written or deleted ({changes})"
        if t["in_step"]:
            text += f"; {t['in_step']} already equal on both sides (ledger brought up to date)"
        return text + "."

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "direction": self.direction,
            "on_conflict": self.on_conflict,
            "applied": self.applied,
            "plan_only": self.plan_only,
            "totals": self.totals(),
            "collections": self.collections,
            "blocked": self.blocked,
            "warnings": self.warnings,
            "seconds": round(self.seconds, 3),
            "snapshot": self.snapshot,
            "previous_dir": self.previous_dir,
            "journal_replayed": self.journal_replayed,
        }

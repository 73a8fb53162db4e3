"""The rollback step's result, as data: :class:`RollbackResult`, its verdict, and its one JSON form
(``05_rollback.json``: :meth:`RollbackResult.to_dict`).

No I/O and no presentation: the notebook's tables and texts are in :mod:`runbook_lib.steps.rollback.report`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from runbook_lib.steps.rollback.plan import (
    BRING_BACK,
    DELETE_ALIAS,
    DELETE_COLLECTION,
    PUT_BACK_ALIAS,
    Action,
    RollbackPlan,
)


@dataclass
class RollbackResult:
    ok: bool
    run_id: str
    confirmed: bool
    actions: list[Action] = field(default_factory=list)
    chroma: dict[str, Any] = field(default_factory=dict)
    qdrant_before: dict[str, Any] | None = None
    qdrant_after: dict[str, Any] | None = None
    health: dict[str, Any] | None = None
    counts: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    env_file: str | None = None
    env_written: str = ""  # the text written to env_file
    restored_from: str | None = None
    kept_old_dir: str | None = None
    #: the reverse sync that brings Qdrant's changes back (its plan, then what it did): SyncResult.to_dict()
    reverse_sync: dict[str, Any] | None = None
    brought_back: int = 0  # records written into / deleted from ChromaDB by the reverse sync
    previous_dir: str | None = None  # where the reverse sync kept the directory it replaced
    blocked: list[str] = field(default_factory=list)  # why it stopped before changing anything (conflicts)
    counts_compared: bool = False  # counts were checked against the backup (restored, nothing came back)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    #: Qdrant collection -> the file its points were exported to before it was deleted
    exports: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of_plan(cls, plan: RollbackPlan, *, confirmed: bool, notes: list[str]) -> RollbackResult:
        """The result as planned (its actions are the plan's own lines: the executor marks them done);
        ``notes`` come before the plan's warnings."""
        return cls(
            ok=not plan.blocked,
            run_id=plan.run_id,
            confirmed=confirmed,
            actions=plan.actions,
            chroma=plan.chroma.to_dict(),
            qdrant_before=plan.qdrant.state_before if plan.qdrant else None,
            reverse_sync=plan.bring_back.planned.to_dict() if plan.bring_back else None,
            blocked=plan.blocked,
            env=dict(plan.app.env),
            warnings=[*notes, *plan.warnings],
        )

    def mark_not_done(self, why: str) -> None:
        """Every action still planned did not happen: ``not done (<why>)``."""
        for a in self.actions:
            if a.status == "planned":
                a.status = f"not done ({why})"

    def _n(self, op: str, status: str = "done") -> int:
        return sum(1 for a in self.actions if a.op == op and a.status == status)

    def coming_back(self) -> str:
        """What the reverse sync's plan brings back from Qdrant, in words."""
        if not self.reverse_sync:
            return ""
        q = {"added": 0, "changed": 0, "deleted": 0}
        for c in self.reverse_sync.get("collections", []):
            for k in q:
                q[k] += int(c["qdrant_changes"][k])
        return (
            f"{sum(q.values())} record(s) come back from Qdrant ({q['added']} added, {q['changed']} changed, "
            f"{q['deleted']} deleted)"
        )

    @property
    def verdict(self) -> str:
        if self.blocked:
            return (
                f"Rollback of run {self.run_id} STOPPED before changing anything: "
                + "; ".join(self.blocked)
                + " (ChromaDB and Qdrant are untouched)."
            )
        if not self.confirmed:
            changes = [a for a in self.actions if a.is_change]
            what = "; ".join(f"{a.op} {a.name}" for a in changes[:6]) + ("; ..." if len(changes) > 6 else "")
            if not changes:
                return (
                    f"Plan only, nothing changed: rolling back run {self.run_id} has nothing to change "
                    "in ChromaDB or Qdrant; re-run with confirm=True to write rollback.env and check ChromaDB."
                )
            back = f"; {self.coming_back()}" if self.reverse_sync else ""
            return (
                f"Plan only, nothing changed: rolling back run {self.run_id} makes {len(changes)} change(s) "
                f"({what}){back}; re-run with confirm=True to carry them out."
            )
        if not self.ok:
            return f"Rollback of run {self.run_id} FAILED: " + "; ".join(self.errors)
        chroma = {
            "restore": f"ChromaDB restored from {self.restored_from} (the previous directory is kept as "
            f"{self.kept_old_dir or 'n/a: there was none'})",
            "keep": "ChromaDB kept in place with every write the app made to it",
            "skipped": "ChromaDB not restored (" + str(self.chroma.get("note", "")).rstrip(".") + ")",
        }[str(self.chroma.get("mode", "skipped"))]
        if self._n(BRING_BACK) or self.brought_back:
            chroma += f"; {self.brought_back} record(s) brought back from Qdrant"
            chroma += f" (the directory before that is kept as {self.previous_dir})" if self.previous_dir else ""
        n_records = sum(int(r.get("count") or 0) for r in self.counts)
        if not self.counts:
            checked = ""
        elif self.counts_compared:
            checked = f"; every count matches the backup ({len(self.counts)} collections, {n_records:,} records)"
        else:
            checked = (
                f"; ChromaDB holds {n_records:,} records in {len(self.counts)} collections (not compared with the "
                "backup: it keeps the writes made since)"
            )
        return (
            f"Rolled back run {self.run_id}: {chroma}; removed {self._n(DELETE_COLLECTION)} Qdrant collection(s) and "
            f"{self._n(DELETE_ALIAS)} alias(es), put back {self._n(PUT_BACK_ALIAS)} alias(es){checked}; "
            f"point the app at ChromaDB with {self.env_file}."
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "verdict": self.verdict,
            "confirmed": self.confirmed,
            "rolled_back_run": self.run_id,
            "plan": [a.to_dict() for a in self.actions],
            "chroma": self.chroma,
            "restored_from": self.restored_from,
            "kept_old_dir": self.kept_old_dir,
            "reverse_sync": self.reverse_sync,
            "brought_back": self.brought_back,
            "previous_dir": self.previous_dir,
            "blocked": self.blocked,
            "counts_compared": self.counts_compared,
            "qdrant_before": self.qdrant_before,
            "qdrant_after": self.qdrant_after,
            "exports": self.exports,
            "health": self.health,
            "counts": self.counts,
            "env_file": self.env_file,
            "env": self.env,
            "warnings": self.warnings,
            "errors": self.errors,
        }

"""The tables and texts the rollback notebook shows, each a function of a :class:`RollbackResult`.

Presentation only: the result itself (and its JSON form) is :mod:`runbook_lib.steps.rollback.result`.
"""

from __future__ import annotations

import pandas as pd

from runbook_lib.steps.rollback.app_env import render_env
from runbook_lib.steps.rollback.result import RollbackResult


def plan_table(result: RollbackResult) -> pd.DataFrame:
    """One row per action of the plan: system, op, name, detail, status."""
    cols = ["system", "op", "name", "detail", "status"]
    return pd.DataFrame([{k: a.to_dict()[k] for k in cols} for a in result.actions], columns=cols)


def bring_back_table(result: RollbackResult) -> pd.DataFrame:
    """Per collection: what changed in Qdrant (comes back) and in ChromaDB (stays) since the last sync, conflicts,
    and what the reverse sync wrote."""
    rows = []
    for c in (result.reverse_sync or {}).get("collections", []):
        row = {"collection": c["collection"]}
        row.update({f"Qdrant {k}": v for k, v in c["qdrant_changes"].items()})
        row.update({f"ChromaDB {k}": v for k, v in c["source_changes"].items()})
        row.update(conflicts=c["conflicts"], written=c.get("applied", 0))
        rows.append(row)
    return pd.DataFrame(rows).set_index("collection") if rows else pd.DataFrame()


def counts_table(result: RollbackResult) -> pd.DataFrame:
    """Per collection: the backup's count, the count now, whether it answered a query, and whether the counts match
    (only checked when the directory was restored from the backup and nothing came back from Qdrant; else None)."""
    cols = ["collection", "backup_count", "count", "query_ok", "match"]
    return pd.DataFrame(result.counts, columns=cols).set_index("collection") if result.counts else pd.DataFrame()


def env_text(result: RollbackResult) -> str:
    """What ``rollback.env`` holds (or, before confirm, would hold)."""
    return result.env_written or render_env(result.env, result.run_id)

"""The sync's tables for the notebook."""

from __future__ import annotations

import pandas as pd

from runbook_lib.steps.sync.result import SyncResult


def plan_table(result: SyncResult) -> pd.DataFrame:
    """One row per collection: changes on each side since the last sync, conflicts, what was applied."""
    rows = []
    for c in result.collections:
        rows.append(
            {
                "collection": c["collection"],
                "ChromaDB added": c["source_changes"]["added"],
                "ChromaDB changed": c["source_changes"]["changed"],
                "ChromaDB deleted": c["source_changes"]["deleted"],
                "Qdrant added": c["qdrant_changes"]["added"],
                "Qdrant changed": c["qdrant_changes"]["changed"],
                "Qdrant deleted": c["qdrant_changes"]["deleted"],
                "conflicts": c["conflicts"],
                "already equal": c["in_step"],
                "unchanged": c["unchanged"],
                "applied": c.get("applied", 0),
                # how much of ChromaDB this sync read: only what was written since the last sync, or every record
                "ChromaDB records read": c.get("source_records_read", 0),
                "ChromaDB compared": c.get("source_compared", "every record"),
            }
        )
    return pd.DataFrame(rows).set_index("collection") if rows else pd.DataFrame()


def conflicts_table(result: SyncResult) -> pd.DataFrame:
    """The first conflicting ids of each collection (changed on both sides since the last sync)."""
    rows = [{"collection": c["collection"], "id": cid} for c in result.collections for cid in c["conflict_ids"]]
    return pd.DataFrame(rows, columns=["collection", "id"])

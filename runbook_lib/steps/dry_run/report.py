"""The tables the dry-run notebook shows, each a function of a :class:`DryRunResult`.

Presentation only: the result itself (and its JSON form) is :mod:`runbook_lib.steps.dry_run.result`.
"""

from __future__ import annotations

import pandas as pd

from runbook_lib.steps.dry_run.result import DryRunResult


def inventory_table(result: DryRunResult) -> pd.DataFrame:
    """One row per source collection: count, dimension, space, metadata keys, documents, uris, size."""
    cols = ["collection", "count", "dimension", "space", "metadata_keys", "documents", "uris", "mb"]
    return pd.DataFrame([{k: c.get(k) for k in cols} for c in result.collections]).set_index("collection")


def plan_table(result: DryRunResult) -> pd.DataFrame:
    """One row per source collection: where it goes in Qdrant, and the estimated time."""
    return pd.DataFrame(result.plan).set_index("source") if result.plan else pd.DataFrame()

"""The tables the dry-run notebook shows, each a function of a :class:`DryRunResult`.

Presentation only: the result itself (and its JSON form) is :mod:`runbook_lib.steps.dry_run.result`.
"""

from __future__ import annotations

import json

import pandas as pd

from runbook_lib.steps.dry_run.result import DryRunResult


def inventory_table(result: DryRunResult) -> pd.DataFrame:
    """One row per source collection: count, dimension, space, metadata keys, documents, uris, size."""
    cols = ["collection", "count", "dimension", "space", "metadata_keys", "documents", "uris", "mb", "framework"]
    cols += ["recommended_layout", "layout_refuses"]
    return pd.DataFrame([{k: c.get(k) for k in cols} for c in result.collections]).set_index("collection")


def plan_table(result: DryRunResult) -> pd.DataFrame:
    """One row per source collection: where it goes in Qdrant, and the estimated time."""
    rows = [{k: v for k, v in pl.items() if k != "example_payload"} for pl in result.plan]
    return pd.DataFrame(rows).set_index("source") if rows else pd.DataFrame()


def payload_examples(result: DryRunResult) -> str:
    """One real record per collection, as its Qdrant payload in the planned layout (JSON)."""
    return "\n".join(
        f"{pl['source']} ({pl.get('payload_layout')}): "
        + json.dumps((pl.get("example_payload") or {}).get("payload"), ensure_ascii=False, default=str)
        for pl in result.plan
    )

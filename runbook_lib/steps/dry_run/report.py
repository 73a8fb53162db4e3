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
    hidden = ("example_payload", "payload_indexes", "unindexed_keys")
    rows = [{k: v for k, v in pl.items() if k not in hidden} for pl in result.plan]
    for row, pl in zip(rows, result.plan, strict=True):
        row["payload_indexes"] = len(pl.get("payload_indexes") or [])
    return pd.DataFrame(rows).set_index("source") if rows else pd.DataFrame()


def payload_index_table(result: DryRunResult) -> pd.DataFrame:
    """One row per planned payload index (and per metadata key left without one): key, path, type, why."""
    rows = []
    for pl in result.plan:
        for ix in pl.get("payload_indexes") or []:
            rows.append({"collection": pl["source"], **ix})
        for un in pl.get("unindexed_keys") or []:
            rows.append({"collection": pl["source"], "key": un["key"], "path": None, "index_type": None, **un})
    columns = ["collection", "key", "path", "index_type", "why"]
    return pd.DataFrame(rows, columns=columns).set_index(["collection", "key"])


def payload_examples(result: DryRunResult) -> str:
    """One real record per collection, as its Qdrant payload in the planned layout (JSON)."""
    return "\n".join(
        f"{pl['source']} ({pl.get('payload_layout')}): "
        + json.dumps((pl.get("example_payload") or {}).get("payload"), ensure_ascii=False, default=str)
        for pl in result.plan
    )


def source_quotas(result: DryRunResult) -> str:
    """The source's quotas and the requests and reading time they mean, per collection (Chroma Cloud)."""
    q = result.source_quotas
    if not q:
        return "The source has no request quotas (a ChromaDB directory or a Chroma server)."
    lines = [
        f"{q['source']}: at most {q['max_records_per_request']} records per request, "
        f"{q['max_concurrent_reads_per_collection']} reads in flight per collection (this run: "
        f"{q['read_concurrency']}); each collection is paged, then paged again until a pass finds nothing new.",
        f"A step that reads the source: about {q['expected_requests']:,} requests, {q['expected_s']:.1f} s of reading.",
        f"This dry run: {q['requests']:,} requests ({q['throttled']:,} throttled, {q['retries']:,} retries) in "
        f"{q['seconds']:.1f} s.",
    ]
    for name, c in q["collections"].items():
        lines.append(f"- {name}: {c['records']:,} records, {c['expected_requests']:,} requests, {c['expected_s']} s")
    return "\n".join(lines)

"""The pandas tables the verify notebook shows, each a function of a :class:`VerifyResult`.

Presentation only: the result itself (and its JSON form) is :mod:`runbook_lib.steps.verify.result`. pandas is
imported here, never by the step, so running the step does not need it.
"""

from __future__ import annotations

import pandas as pd

from runbook_lib.steps.verify.result import SOURCE_CHECK, VerifyResult


def table(result: VerifyResult) -> pd.DataFrame:
    """One row per (collection, check): result and the numbers behind it."""
    rows = []
    for c in result.collections:
        for name, chk in c["checks"].items():
            rows.append(
                {
                    "collection": c["collection"],
                    "check": name,
                    "result": chk["result"],
                    "numbers": chk.get("summary", ""),
                }
            )
    if result.source_unchanged:
        rows.append(
            {
                "collection": "(whole source)",
                "check": SOURCE_CHECK,
                "result": result.source_unchanged["result"],
                "numbers": result.source_unchanged.get("summary", ""),
            }
        )
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).set_index(["collection", "check"])


def summary(result: VerifyResult) -> pd.DataFrame:
    """checks x collections: pass / FAIL / skipped / not run."""
    data = {c["collection"]: {n: chk["result"] for n, chk in c["checks"].items()} for c in result.collections}
    frame = pd.DataFrame(data).T if data else pd.DataFrame()
    if result.source_unchanged and not frame.empty:
        frame[SOURCE_CHECK] = result.source_unchanged["result"]
    return frame


def differences_table(result: VerifyResult) -> pd.DataFrame:
    """The first differing records of every check: id, field, source value, Qdrant value, what differs."""
    rows = [d for c in result.collections for d in c.get("differences", [])]
    if not rows:
        return pd.DataFrame(columns=["collection", "check", "id", "field", "source", "target", "detail"])
    return pd.DataFrame(rows)


def search_table(result: VerifyResult) -> pd.DataFrame:
    """Search parity per collection, with the approximate-index agreement (information only)."""
    rows = []
    for c in result.collections:
        n = c["checks"]["search"]["numbers"]
        if not n:
            continue
        approx = n.get("approximate", {})
        rows.append(
            {
                "collection": c["collection"],
                "result": c["checks"]["search"]["result"],
                "queries": n.get("queries"),
                "k": n.get("k"),
                "exact recall (min)": n.get("recall_min"),
                "score mismatches": n.get("score_mismatches"),
                "max score error": n.get("max_score_error"),
                "Chroma index recall": approx.get("chroma_recall"),
                "Qdrant index recall": approx.get("qdrant_recall"),
                "Chroma vs Qdrant agreement": approx.get("agreement"),
            }
        )
    return pd.DataFrame(rows).set_index("collection") if rows else pd.DataFrame()

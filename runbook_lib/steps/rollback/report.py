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


def counts_table(result: RollbackResult) -> pd.DataFrame:
    """Per collection: the backup's count, the restored count, whether it answered a query, whether they match."""
    cols = ["collection", "backup_count", "restored_count", "query_ok", "match"]
    return pd.DataFrame(result.counts, columns=cols).set_index("collection") if result.counts else pd.DataFrame()


def env_text(result: RollbackResult) -> str:
    """What ``rollback.env`` holds (or, before confirm, would hold)."""
    return result.env_written or render_env(result.env, result.run_id)

"""The table the migrate notebook shows, a function of a :class:`MigrationResult`.

Presentation only: the result itself (and its JSON form) is :mod:`runbook_lib.steps.migrate.result`.
"""

from __future__ import annotations

import pandas as pd

from runbook_lib.steps.migrate.result import MigrationResult


def table(result: MigrationResult) -> pd.DataFrame:
    """One row per collection: target, distance, dimension, records, time, throughput, count, status."""
    return pd.DataFrame(result.rows).set_index("collection").convert_dtypes() if result.rows else pd.DataFrame()

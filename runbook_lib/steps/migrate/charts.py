"""The migrate step's chart, saved with :meth:`runbook_lib.kernel.step.Step.save_figure`.

* ``migrate_throughput``: records migrated and records per second, per collection (collections done only).
"""

from __future__ import annotations

from runbook_lib.kernel.display import pyplot
from runbook_lib.kernel.step import Step
from runbook_lib.steps.migrate.result import MigrationResult


def migrate_charts(step: Step, result: MigrationResult) -> list[str]:
    """Draw and save the chart of ``result``; the paths as saved (none when no collection was copied)."""
    rows = [r for r in result.rows if r["status"] == "done" and r["records_per_s"]]
    if not rows:
        return []
    plt = pyplot()

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, max(3.0, 0.35 * len(rows) + 1.5)))
    names = [r["collection"] for r in rows]
    ax1.barh(names, [r["records"] for r in rows], color="#4c72b0")
    ax1.set_xlabel("records")
    ax1.set_title("Records migrated per collection")
    ax2.barh(names, [r["records_per_s"] for r in rows], color="#55a868")
    ax2.set_xlabel("records / s")
    ax2.set_title("Migration throughput per collection")
    ax2.set_yticklabels([])
    fig.tight_layout()
    return [step.save_figure(fig, "migrate_throughput")]

"""The dry-run step's chart, saved with :meth:`runbook_lib.kernel.step.Step.save_figure`.

* ``dry_run_inventory``: source collections by size, coloured by Chroma distance space (empty ones left out).
"""

from __future__ import annotations

from runbook_lib.kernel.display import pyplot
from runbook_lib.kernel.step import Step
from runbook_lib.steps.dry_run.result import DryRunResult


def dry_run_charts(step: Step, result: DryRunResult) -> list[str]:
    """Draw and save the chart of ``result``; the paths as saved (none when every collection is empty)."""
    rows = [c for c in result.collections if c["count"]]
    if not rows:
        return []
    plt = pyplot()

    rows.sort(key=lambda c: c["count"])
    colors = {"cosine": "#4c72b0", "l2": "#dd8452", "ip": "#55a868"}
    fig, ax = plt.subplots(figsize=(9, max(3.0, 0.35 * len(rows) + 1.2)))
    ax.barh([c["collection"] for c in rows], [c["count"] for c in rows], color=[colors[c["space"]] for c in rows])
    for space, color in colors.items():
        ax.bar(0, 0, color=color, label=space)
    ax.legend(title="Chroma space")
    ax.set_xlabel("records")
    ax.set_title("Source collections by size (colour: distance space)")
    fig.tight_layout()
    return [step.save_figure(fig, "dry_run_inventory")]

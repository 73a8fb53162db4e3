"""The verify step's charts, saved with :meth:`runbook_lib.kernel.step.Step.save_figure`.

* ``verify_checks``: pass / FAIL per collection and check (the run-wide ``source unchanged`` included);
* ``verify_vector_differences``: distribution of the max absolute difference per vector, with the tolerance;
* ``verify_approximate_agreement``: Chroma's and Qdrant's approximate indexes against the exact top-k
  (information, not a pass condition).
"""

from __future__ import annotations

import numpy as np

from runbook_lib.kernel.display import pyplot
from runbook_lib.kernel.step import Step
from runbook_lib.steps.verify.result import CHECKS, FAIL, HIST_EDGES, NOT_RUN, PASS, SKIPPED, SOURCE_CHECK, VerifyResult


def verify_charts(step: Step, result: VerifyResult) -> list[str]:
    """Draw and save the charts of ``result``; their paths as saved (none when no collection was verified)."""
    if not result.collections:
        return []
    plt = pyplot()
    from matplotlib.colors import ListedColormap

    figures: list[str] = []
    # 1. pass/fail heatmap: checks x collections
    columns = [*CHECKS, SOURCE_CHECK]
    names = [c["collection"] for c in result.collections]
    codes = {FAIL: 0, SKIPPED: 1, NOT_RUN: 1, PASS: 2}
    grid = np.array(
        [
            [codes.get(c["checks"][chk]["result"], 1) for chk in CHECKS]
            + [codes.get(result.source_unchanged.get("result", SKIPPED), 1)]
            for c in result.collections
        ]
    )
    fig, ax = plt.subplots(figsize=(1.3 * len(columns) + 3, 0.45 * len(names) + 1.8))
    ax.imshow(grid, cmap=ListedColormap(["#d62728", "#d9d9d9", "#2ca02c"]), vmin=0, vmax=2, aspect="auto")
    labels = {0: "FAIL", 1: "–", 2: "pass"}
    for (row, col), value in np.ndenumerate(grid):
        text = labels[int(value)]
        if value == 1:
            text = result.collections[row]["checks"][columns[col]]["result"] if col < len(CHECKS) else "skipped"
        ax.text(col, row, text, ha="center", va="center", fontsize=8, color="white" if value != 1 else "black")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("check")
    ax.set_ylabel("collection")
    ax.set_title("Verification result per collection and check")
    fig.tight_layout()
    figures.append(step.save_figure(fig, "verify_checks"))

    # 2. distribution of the max absolute difference per vector
    counts = np.asarray(result.vector_histogram.get("counts", []), dtype=float)
    if counts.sum() > 0:
        edges = np.concatenate([[1e-13], HIST_EDGES, [1e2]])
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.stairs(counts, edges, fill=True, color="#4c72b0", alpha=0.8, label="vectors")
        tol = float(result.settings["tolerance"])
        ax.axvline(tol, color="#d62728", linestyle="--", label=f"tolerance {tol:g}")
        ax.set_xscale("log")
        ax.set_yscale("log", nonpositive="clip")
        ax.set_ylim(bottom=0.8)
        ax.set_xlabel("max |source − Qdrant| per vector (log scale; leftmost bin: below 1e-12, exact zeros included)")
        ax.set_ylabel("vectors (log scale)")
        ax.set_title(f"Vector differences: {int(counts.sum()):,} vectors compared")
        ax.legend(loc="upper right")
        fig.tight_layout()
        figures.append(step.save_figure(fig, "verify_vector_differences"))

    # 3. approximate-index agreement (information only)
    rows = [
        (c["collection"], c["checks"]["search"]["numbers"].get("approximate", {}))
        for c in result.collections
        if c["checks"]["search"]["numbers"]
    ]
    if rows:
        fig, ax = plt.subplots(figsize=(8, 0.5 * len(rows) + 1.8))
        y = np.arange(len(rows))
        series = [
            ("Chroma index recall vs exact", "chroma_recall", "#dd8452"),
            ("Qdrant index recall vs exact", "qdrant_recall", "#4c72b0"),
            ("Chroma vs Qdrant agreement", "agreement", "#55a868"),
        ]
        for i, (label, key, colour) in enumerate(series):
            values = [float(a.get(key) or 0.0) for _, a in rows]
            ax.barh(y + (i - 1) * 0.27, values, height=0.26, label=label, color=colour)
        ax.set_yticks(y, [r[0] for r in rows])
        ax.set_xlim(0, 1.05)
        ax.set_xlabel("mean overlap of the top-k (1.0 = identical)")
        ax.set_ylabel("collection")
        ax.set_title("Approximate search agreement (information, not a pass condition)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        fig.tight_layout()
        figures.append(step.save_figure(fig, "verify_approximate_agreement"))
    return figures

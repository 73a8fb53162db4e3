"""Import time of the runner and of a step's kernel, with and without the removed ``rfc3987_syntax`` stand-in.

Each case runs in fresh interpreters, alternating with/without, on a tree that still has the stand-in
(``runbook_lib/runner/deferred_imports.py``, commit 0dfb5b7 and before)::

    git archive 0dfb5b7 runbook_lib | tar -x -C /tmp/before
    .venv/bin/python benchmarks/import_bench.py --tree /tmp/before --runs 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

STAND_IN = "from runbook_lib.runner.deferred_imports import defer_rfc3987_syntax\ndefer_rfc3987_syntax()\n"
CASES = {
    "runbook --help (cli.main)": (
        "import sys\nsys.argv = ['runbook', '--help']\nimport runbook_lib.cli as cli\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
    ),
    "the runner: runbook_lib.cli, papermill, nbconvert": "import runbook_lib.cli\nimport papermill, nbconvert\n",
    "the kernel: ipykernel and every step's imports": "import ipykernel.kernelapp\nimport runbook_lib.kernel.step\n"
    + "".join(
        f"import runbook_lib.steps.{step}.engine\n"
        for step in ("dry_run", "migrate", "verify", "monitor", "sync", "rollback")
    ),
}


def _seconds(code: str, tree: Path) -> float:
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(tree)}  # and cwd: `python -c` puts it first on sys.path
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env, cwd=tree)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, required=True, help="a runbook_lib tree that has the stand-in")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"load average at start {os.getloadavg()}")
    for name, code in CASES.items():
        with_stand_in: list[float] = []
        without: list[float] = []
        for _ in range(args.runs):
            with_stand_in.append(_seconds(STAND_IN + code, args.tree))
            without.append(_seconds(code, args.tree))
        w, wo = statistics.median(with_stand_in), statistics.median(without)
        print(
            f"{name:50s} with {w:.2f} s [{min(with_stand_in):.2f}]  without {wo:.2f} s [{min(without):.2f}]  "
            f"+{wo - w:.2f} s ({wo / w:.2f}x), {args.runs} runs"
        )
    print(f"load average at end {os.getloadavg()}")


if __name__ == "__main__":
    main()

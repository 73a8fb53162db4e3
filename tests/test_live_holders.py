""" "Is the directory open" counts a process it cannot inspect (another user's, a container's) as a holder, unless
told otherwise (``-p uninspectable ignore``), and says which. Real processes: a holder running as ``nobody`` keeps a
file of the directory open, and the check runs in a child without capabilities (root without CAP_SYS_PTRACE cannot
read another user's ``/proc/<pid>/fd``, as an ordinary user cannot)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = """
import json, sys
from pathlib import Path
from runbook_lib.chroma.writer import processes_holding, refuse_if_open, uninspectable_note
from runbook_lib.errors import ConfigError
d = Path(sys.argv[1])
try:
    refuse_if_open(d)
    refused = ""
except ConfigError as exc:
    refused = str(exc)
print(json.dumps({
    "counted": processes_holding(d),
    "ignored": processes_holding(d, count_uninspectable=False),
    "refused": refused,
    "note": uninspectable_note(d),
}))
"""

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv to run as two users"
)


@pytest.fixture
def held_by_another_user() -> Iterator[tuple[Path, int]]:
    """A directory readable by all, one of its files held open by a process running as ``nobody``."""
    directory = Path(tempfile.mkdtemp(prefix="runbook-holders-"))
    try:
        directory.chmod(0o755)
        (directory / "chroma.sqlite3").write_bytes(b"x")
        (directory / "chroma.sqlite3").chmod(0o644)
        holder = subprocess.Popen(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/bin/sh", "-c",
             f"exec 3<{directory / 'chroma.sqlite3'}; echo ready; read x"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            yield directory, holder.pid
        finally:
            holder.communicate("")
    finally:
        shutil.rmtree(directory)


def test_a_process_that_cannot_be_inspected_counts_as_a_holder(held_by_another_user: tuple[Path, int]) -> None:
    directory, pid = held_by_another_user
    done = subprocess.run(
        ["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", CHECK, str(directory)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
    )  # fmt: skip
    seen = json.loads(done.stdout)
    mine = [h for h in seen["counted"] if h.startswith(f"{pid} ")]
    assert mine and "cannot be inspected" in mine[0], seen["counted"][:10]
    assert not any(h.startswith(f"{pid} ") for h in seen["ignored"])
    assert f"{pid} (sh)" in seen["refused"] and "-p uninspectable ignore" in seen["refused"]
    assert f"{pid} (sh)" in seen["note"] or "..." in seen["note"]


def test_with_every_process_inspectable_the_holder_is_named(held_by_another_user: tuple[Path, int]) -> None:
    from runbook_lib.chroma.writer import processes_holding

    directory, pid = held_by_another_user
    assert f"{pid} (sh)" in processes_holding(directory, count_uninspectable=False)

"""The ChromaDB directory's disk, found out before anything is copied: a CHROMA_PERSIST_DIR that is a mount point (a
Docker volume: it cannot be renamed, so the swap would fail after all the staging) is refused up front, and a disk
without room for the staged copy is a configuration error (exit 2) naming the folder that needs the space. Real
tmpfs mounts (the test needs root to mount; skipped otherwise)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_rollback_live import migrate_ok, qdrant_writes

from runbook_lib.chroma.files import NotEnoughSpace
from runbook_lib.chroma.writer import ChromaWriter
from runbook_lib.config.settings import ChromaSettings
from runbook_lib.errors import ConfigError
from runbook_lib.steps.sync.engine import sync

from conftest import make_small_db, run_step_inprocess


def _mount(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()})")


@pytest.fixture
def mounted(tmp_path: Path) -> Iterator[Any]:
    points: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        _mount(path, size)
        points.append(path)
        return path

    yield mount
    for path in reversed(points):
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_persist_dir_that_is_a_mount_point_is_refused_in_the_plan(runbook_env: dict[str, Path], mounted: Any) -> None:
    chroma_dir = mounted(runbook_env["chroma"], "64m")
    make_small_db(chroma_dir)
    rid = migrate_ok()
    qdrant_writes(runbook_env["qdrant"])
    with pytest.raises(ConfigError, match="is a mount point") as info:
        run_step_inprocess("sync", sync, run_id=rid, direction="reverse")  # the plan only: refused already
    assert info.value.exit_code == 2
    assert [p.name for p in chroma_dir.parent.iterdir() if ".sync-staging-" in p.name] == []


def test_no_room_for_the_staged_copy_is_exit_2_naming_the_folder(tmp_path: Path, mounted: Any) -> None:
    disk = mounted(tmp_path / "small_disk", "12m")
    chroma_dir = disk / "chroma_db"
    make_small_db(chroma_dir)
    with pytest.raises(NotEnoughSpace) as info:
        ChromaWriter.open(ChromaSettings(persist_dir=chroma_dir))
    assert info.value.exit_code == 2
    message = str(info.value)
    assert f"in {disk}" in message and "beside CHROMA_PERSIST_DIR" in message and "backup location" not in message
    assert [p.name for p in disk.iterdir()] == ["chroma_db"]  # nothing was copied

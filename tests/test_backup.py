"""Backups: SQLite online-backup copy, sha256 manifest, verification, no-room check before copying."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from runbook_lib.chroma.backup import backup_root, create_backup, load_backup, source_unchanged, verify_backup
from runbook_lib.chroma.files import checksum_tree, ensure_free_space
from runbook_lib.errors import BackupError


def test_backup_is_checksummed_and_verified(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    src = runbook_env["chroma"]
    backup = create_backup(src, "run-1")
    assert backup.path == backup_root(src) / "run-1"
    manifest = json.loads((backup.path / "manifest.json").read_text())
    assert manifest["sqlite_integrity"] == "ok"
    assert set(manifest["files"]) == set(checksum_tree(src))  # every file copied
    assert manifest["source_files"] == checksum_tree(src)
    # the SQLite copy is a complete, readable database with the same rows
    con = sqlite3.connect(backup.data_dir / "chroma.sqlite3")
    try:
        assert con.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0] == 1120
    finally:
        con.close()
    verify_backup(load_backup(backup.path))
    assert source_unchanged(backup, src) == []
    with pytest.raises(BackupError, match="already exists"):
        create_backup(src, "run-1")


def test_tampered_backup_is_refused(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    backup = create_backup(runbook_env["chroma"], "run-2")
    victim = next(p for p in backup.data_dir.rglob("*") if p.is_file() and p.name != "chroma.sqlite3")
    data = bytearray(victim.read_bytes())
    data[0] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="fails its checksum verification") as info:
        verify_backup(load_backup(backup.path))
    assert victim.name in str(info.value)
    (backup.path / "manifest.json").unlink()
    with pytest.raises(BackupError, match="No backup manifest"):
        load_backup(backup.path)


def test_changed_source_is_reported(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    backup = create_backup(runbook_env["chroma"], "run-3")
    (runbook_env["chroma"] / "stray.txt").write_text("x")
    assert source_unchanged(backup, runbook_env["chroma"]) == ["stray.txt: not in the manifest"]


def test_no_room_fails_before_copying(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match=r"Not enough disk space for the backup .* only .* MB free"):
        ensure_free_space(tmp_path / "not" / "yet", 10**18, "the backup of x")
    assert not (tmp_path / "not").exists()


def test_a_wal_file_written_after_the_backup_is_a_changed_source(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    """A live app's committed writes can sit in ``chroma.sqlite3-wal`` alone: that file counts as data."""
    src = runbook_env["chroma"]
    backup = create_backup(src, "run-wal")
    assert backup.manifest["source_files_with_wal"] is True
    (src / "chroma.sqlite3-wal").write_bytes(b"\x37\x7f\x06\x82" + b"\0" * 60)
    assert source_unchanged(backup, src) == ["chroma.sqlite3-wal: not in the manifest"]
    (src / "chroma.sqlite3-shm").write_bytes(b"\0" * 64)  # an index, not data: never a difference by itself
    assert source_unchanged(backup, src) == ["chroma.sqlite3-wal: not in the manifest"]


def test_a_source_that_changes_during_the_copy_fails_the_backup(
    small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live app flushing an index file mid-copy: the backup fails, names the file, and leaves nothing."""
    from runbook_lib.chroma import files as chroma_files

    src = runbook_env["chroma"]
    victim = next(p for p in src.rglob("*") if p.is_file() and p.name != "chroma.sqlite3")
    real_copy = chroma_files.copy_chroma_dir

    def copy_while_the_app_writes(a: Path, b: Path, **kw: Any) -> None:
        real_copy(a, b, **kw)
        with victim.open("ab") as fh:
            fh.write(b"flushed by the app")

    monkeypatch.setattr(chroma_files, "copy_chroma_dir", copy_while_the_app_writes)
    with pytest.raises(BackupError, match="changed while it was being backed up") as info:
        create_backup(src, "run-live")
    assert victim.name in str(info.value)
    assert not (backup_root(src) / "run-live").exists() and not list(backup_root(src).glob("run-live*"))

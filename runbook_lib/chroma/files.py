"""Files of a ChromaDB persistent directory: consistent copies and sha256 manifests.

The SQLite database is copied with SQLite's online backup API (a consistent snapshot even while
the app has it open); the other files (the HNSW segment folders) are copied byte for byte.
SQLite's transient ``-wal``/``-shm``/``-journal`` files are never copied: the backup API already
reads through them.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from runbook_lib.errors import BackupError, SourceError

SQLITE_NAME = "chroma.sqlite3"
_TRANSIENT_SUFFIXES = ("-wal", "-shm", "-journal")
_CHUNK = 1 << 20


#: SQLite files that can hold committed data the main file does not have yet (``-shm`` is only an index).
_DATA_HOLDING_SUFFIXES = ("-wal", "-journal")


def iter_files(root: Path, *, with_wal: bool = False) -> Iterator[Path]:
    """Every regular file under ``root`` worth copying, in a stable order; ``with_wal`` adds the SQLite files
    that can hold data (``-wal``, ``-journal``), for checks that the live directory did not change."""
    keep = _DATA_HOLDING_SUFFIXES if with_wal else ()
    for path in sorted(root.rglob("*")):
        if path.is_file() and (not path.name.endswith(_TRANSIENT_SUFFIXES) or path.name.endswith(keep)):
            yield path


def stat_tree(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file that can hold data: a cheap fingerprint to tell whether
    the directory changed while it was being copied."""
    out = {}
    for p in iter_files(root, with_wal=True):
        st = p.stat()
        out[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checksum_tree(root: Path, *, with_wal: bool = False) -> dict[str, dict[str, object]]:
    """relative path -> {"sha256", "size"} for every file under ``root`` (``with_wal``: see :func:`iter_files`)."""
    return {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "size": p.stat().st_size}
        for p in iter_files(root, with_wal=with_wal)
    }


def tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in iter_files(root))


def compare_checksums(expected: dict[str, dict[str, object]], root: Path, *, with_wal: bool = False) -> list[str]:
    """Problems found when checking ``root`` against ``expected`` (empty list: identical)."""
    problems: list[str] = []
    files = iter_files(root, with_wal=with_wal) if root.is_dir() else iter([])
    actual_files = {p.relative_to(root).as_posix() for p in files}
    for rel, meta in sorted(expected.items()):
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256_file(path) != meta["sha256"]:
            problems.append(f"{rel}: checksum differs")
    for rel in sorted(actual_files - set(expected)):
        problems.append(f"{rel}: not in the manifest")
    return problems


def sqlite_backup(src: Path, dst: Path) -> None:
    """Copy a SQLite database with the online backup API (read-only on the source)."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True)
    try:
        target = sqlite3.connect(dst)
        try:
            source.backup(target)
        finally:
            target.close()
    finally:
        source.close()


def sqlite_integrity(path: Path) -> str:
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return str(con.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        con.close()


def sqlite_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a SQLite database (e.g. ``file is not a database``), or None when it can.
    Opens it read-only and reads its schema: cheap, and what fails first on a damaged or foreign file."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return str(exc) or type(exc).__name__
    try:
        con.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        return str(exc) or type(exc).__name__
    finally:
        con.close()
    return None


class NotEnoughSpace(BackupError):
    """The disk that a copy is written to has no room for it: found before anything changed (exit 2)."""

    exit_code = 2


def ensure_free_space(dest: Path, needed: int, what: str, *, fix: str | None = None) -> None:
    """Fail before copying anything when the disk holding ``dest`` (the folder the copy is written in) has no room
    for ``needed`` bytes; ``fix`` says how to make room (default: free space on that disk)."""
    probe = dest
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    margin = max(needed // 10, 16 << 20)
    if free < needed + margin:
        raise NotEnoughSpace(
            f"Not enough disk space for {what} in {dest}: {needed / 1e6:.1f} MB needed (plus {margin / 1e6:.0f} MB "
            f"margin) but only {free / 1e6:.1f} MB free on the disk holding {probe}; "
            + (fix or "free space on that disk (nothing was changed), then run this step again."),
            needed=needed,
            free=free,
        )


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk is full: ``ENOSPC``, or SQLite's "database or disk is
    full" as chromadb passes it on."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "disk is full" in str(seen) or os.strerror(errno.ENOSPC) in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def is_mount_point(path: Path) -> bool:
    """Whether ``path`` is a mount point (a Docker volume, a separate disk): it cannot be renamed away."""
    try:
        return os.path.ismount(path) or path.stat().st_dev != path.parent.stat().st_dev
    except OSError:
        return False


def copy_chroma_dir(src: Path, dst: Path, *, consistent_sqlite: bool = True) -> None:
    """Copy a ChromaDB directory to ``dst`` (which must not exist yet)."""
    dst.mkdir(parents=True, exist_ok=False)
    for path in iter_files(src):
        rel = path.relative_to(src)
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if consistent_sqlite and rel.as_posix() == SQLITE_NAME:
            sqlite_backup(path, out)
        else:
            shutil.copy2(path, out)


def damaged_sqlite_error(db: Path, problem: str, *, is_persist_dir: bool = True) -> SourceError:
    """The one sentence for a ``chroma.sqlite3`` that SQLite cannot read (garbage, truncated, another format)."""
    if is_persist_dir:
        return SourceError(
            f"{db} is not a readable SQLite database ({problem}): the ChromaDB directory CHROMA_PERSIST_DIR="
            f"{db.parent} is damaged or is not a ChromaDB directory; restore it from a backup (under "
            f"{db.parent.name}.backup/) or point CHROMA_PERSIST_DIR at a healthy ChromaDB directory.",
            path=str(db),
        )
    return SourceError(
        f"{db} is not a readable SQLite database ({problem}): this copy of CHROMA_PERSIST_DIR is damaged and cannot "
        "be read; use another backup, or start a new run to take a new backup.",
        path=str(db),
    )

"""VECTOR_DB=dual on real chromadb and real Qdrant Edge (the engine): writes reach both stores, reads come from
VECTOR_DB_READ, and a write the secondary store really misses (a Qdrant server that is not there, a Qdrant folder
another client holds, a Chroma collection deleted) is journaled durably, listed by ``Journal.pending()`` and
replayed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import chromadb
import pytest

from runbook_lib.app import UnknownCollectionError, VectorDBClient
from runbook_lib.app.journal import Journal, JournalError
from runbook_lib.errors import ConfigError, RunbookError

from conftest import holding_qdrant
from test_app_writes import ALL, Dirs, canonical, make_stores, vec

NAME = "docs"


@pytest.fixture
def dirs(tmp_path: Path) -> Dirs:
    return make_stores(tmp_path, {NAME: "cosine"})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def snapshot(env: dict[str, str]) -> dict[str, object]:
    with VectorDBClient(env) as db:
        return canonical(db.get(NAME, include=["documents", "metadatas", "uris"])) | {"count": db.count(NAME)}


def writes(db: VectorDBClient) -> None:
    db.add(NAME, ["a", "b", "c"], [vec(1), vec(2), vec(3)], documents=["A", "B", "C"], metadatas=[{"k": 1}] * 3)
    db.update(NAME, ["a"], metadatas=[{"k": 2.0}])
    db.upsert(NAME, ["d"], [vec(4)], uris=["s3://d"])
    db.delete(NAME, where={"k": 2.0})


@pytest.mark.parametrize("read", ["chroma", "qdrant"])
def test_dual_writes_reach_both_stores(dirs: Dirs, read: str) -> None:
    with VectorDBClient(dirs.env("dual", VECTOR_DB_READ=read)) as db:
        assert db.read_from == read
        writes(db)
        assert db.get(NAME, include=[]).ids == ["b", "c", "d"] and db.count(NAME) == 3
        assert db.journal_backlog() == 0
    assert snapshot(dirs.env("chroma")) == snapshot(dirs.env("qdrant"))
    assert not (dirs.outputs / "dual_write_journal.jsonl").exists()


def test_reads_come_from_the_read_store(dirs: Dirs) -> None:
    with VectorDBClient(dirs.env("qdrant")) as db:  # a record only Qdrant has
        db.add(NAME, ["only-q"], [vec(9)])
    with VectorDBClient(dirs.env("dual", VECTOR_DB_READ="qdrant")) as db:
        assert db.get(NAME).ids == ["only-q"] and db.search(NAME, vec(9), limit=1).ids == ["only-q"]
    with VectorDBClient(dirs.env("dual")) as db:  # default: chroma, before cutover
        assert db.read_from == "chroma" and db.get(NAME).ids == [] and db.count(NAME) == 0
    with pytest.raises(ConfigError, match="VECTOR_DB_READ"):
        VectorDBClient(dirs.env("dual", VECTOR_DB_READ="both"))


def test_unreachable_qdrant_server_is_journaled_durably(dirs: Dirs) -> None:
    env = dirs.env("dual", QDRANT_URL=f"http://127.0.0.1:{closed_port()}")
    with VectorDBClient(env) as db:
        writes(db)  # the app carries on: every write is in Chroma, the primary
        assert db.get(NAME, include=[]).ids == ["b", "c", "d"]
        assert db.journal_backlog() == 4
    assert snapshot(dirs.env("chroma"))["count"] == 3
    # durable: another process reads the file the calls fsync'd before returning
    path = dirs.outputs / "dual_write_journal.jsonl"
    code = f"from runbook_lib.app.journal import Journal; print(len(Journal({str(path)!r}).pending()))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "4"
    entries = Journal(path).pending()
    assert [(e.seq, e.operation, e.ids, e.where) for e in entries] == [
        (1, "add", ["a", "b", "c"], None),
        (2, "update", ["a"], None),
        (3, "upsert", ["d"], None),
        (4, "delete", ["a"], {"k": 2.0}),  # the ids that matched in the primary
    ]
    assert {(e.collection, e.missed, e.primary) for e in entries} == {(NAME, "qdrant", "chroma")}
    assert all("Cannot reach the Qdrant server" in e.error and e.time.endswith("Z") for e in entries)
    lines = path.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2, 3, 4]


def test_locked_qdrant_folder_is_journaled_then_replayed(dirs: Dirs) -> None:
    # an embedded target has one user at a time (Edge locks each shard), so the app's cannot open it
    with holding_qdrant(dirs.qdrant), VectorDBClient(dirs.env("dual")) as db:
        writes(db)
        assert db.journal_backlog() == 4
    with VectorDBClient(dirs.env("dual")) as db:
        assert db.replay_journal() == 4
        assert db.journal_backlog() == 0
        db.add(NAME, ["e"], [vec(5)])
    assert snapshot(dirs.env("chroma")) == snapshot(dirs.env("qdrant"))
    journal = Journal(dirs.outputs / "dual_write_journal.jsonl")
    assert journal.pending() == []
    entry = journal.append(
        collection=NAME, operation="add", ids=["x"], where=None, missed="qdrant", primary="chroma", error="e"
    )
    assert entry.seq == 5  # numbering goes on after a compaction


def test_deleted_chroma_collection_is_journaled_when_qdrant_is_primary(dirs: Dirs) -> None:
    client = chromadb.PersistentClient(path=str(dirs.chroma))
    client.delete_collection(NAME)
    client.close()
    with VectorDBClient(dirs.env("dual", VECTOR_DB_READ="qdrant")) as db:
        db.add(NAME, ["a"], [vec(1)], documents=["A"])
        assert db.get(NAME).documents == ["A"]
        (entry,) = db.journal.pending()
    assert (entry.operation, entry.ids, entry.missed, entry.primary) == ("add", ["a"], "chroma", "qdrant")
    assert "does not exist" in entry.error


def test_a_failed_primary_write_raises_and_writes_nothing(dirs: Dirs) -> None:
    client = chromadb.PersistentClient(path=str(dirs.chroma))
    client.delete_collection(NAME)
    client.close()
    with VectorDBClient(dirs.env("dual")) as db:
        with pytest.raises(UnknownCollectionError):
            db.add(NAME, ["a"], [vec(1)])
        assert db.journal_backlog() == 0
    assert snapshot(dirs.env("qdrant"))["count"] == 0


def test_an_unwritable_journal_raises(dirs: Dirs, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = dirs.env("dual", QDRANT_URL=f"http://127.0.0.1:{closed_port()}", VECTOR_DB_JOURNAL=str(blocker / "j.jsonl"))
    with VectorDBClient(env) as db, pytest.raises(RunbookError, match="journal") as info:
        db.add(NAME, ["a"], [vec(1)])
    assert "chroma" in str(info.value) and "\n" not in str(info.value)
    assert snapshot(dirs.env("chroma"))["count"] == 1  # the primary has it; the error says so


# --- the journal file ------------------------------------------------------------------------------
def _append(journal: Journal, ids: list[str]) -> int:
    return journal.append(
        collection="c", operation="upsert", ids=ids, where=None, missed="qdrant", primary="chroma", error="x"
    ).seq


def test_journal_pending_mark_replayed_and_compaction(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j" / "journal.jsonl")
    assert journal.pending() == [] and journal.backlog() == 0 and journal.mark_replayed(5) == 0
    assert [_append(journal, [str(i)]) for i in range(5)] == [1, 2, 3, 4, 5]
    assert journal.mark_replayed(3) == 3
    assert [e.seq for e in journal.pending()] == [4, 5]
    assert journal.path.read_text().splitlines()[0] == '{"replayed_upto": 3}'
    assert journal.mark_replayed(5) == 2 and journal.pending() == []
    assert _append(journal, ["z"]) == 6
    with pytest.raises(ValueError):
        journal.mark_replayed(-1)


def test_a_line_cut_short_is_ignored_and_a_corrupt_one_refused(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    _append(journal, ["a"])
    with open(journal.path, "ab") as f:
        f.write(b'{"seq": 2, "time": "2025')  # a crash in the middle of an append that never returned
    assert [e.seq for e in journal.pending()] == [1]
    assert _append(journal, ["b"]) == 2
    assert [e.ids for e in journal.pending()] == [["a"], ["b"]]
    with open(journal.path, "ab") as f:
        f.write(b"not json\n")
    with pytest.raises(JournalError, match="Line 3"):
        journal.pending()


def test_concurrent_appends_get_distinct_sequence_numbers(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    seqs: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        journal = Journal(path)  # one instance per thread: the file lock, not the thread lock, orders them
        for _ in range(20):
            seq = _append(journal, ["x"])
            with lock:
                seqs.append(seq)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seqs) == list(range(1, 81))
    assert [e.seq for e in Journal(path).pending()] == list(range(1, 81))


def test_get_include_all_from_both_after_replay_matches(dirs: Dirs) -> None:
    """Replay copies whole records: documents, metadata (types kept) and uris equal in both stores."""
    with holding_qdrant(dirs.qdrant), VectorDBClient(dirs.env("dual")) as db:
        db.add(NAME, ["a", "b"], [vec(1), vec(2)], documents=["A", None], metadatas=[{"i": 1, "f": 1.0}, None])
        db.update(NAME, ["b"], uris=["s3://b"])
    with VectorDBClient(dirs.env("dual")) as db:
        assert db.replay_journal() == 2
    with VectorDBClient(dirs.env("chroma")) as chroma, VectorDBClient(dirs.env("qdrant")) as qdrant:
        assert canonical(chroma.get(NAME, include=ALL)) == canonical(qdrant.get(NAME, include=ALL))

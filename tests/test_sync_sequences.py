"""A sync reads only what the app wrote: ChromaDB's write sequence, the ledger's stamps, and the cases where the
sequence must not be trusted (a directory swapped for an older copy, an old ledger, ``full_compare``). Real
chromadb (persistent directory), qdrant-client local mode, the run's ledger."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest

from runbook_lib.chroma.catalog import Catalog
from runbook_lib.core.fingerprint import _canonical, payload_digest
from runbook_lib.state.ledger import Ledger
from runbook_lib.steps.migrate.engine import migrate
from runbook_lib.steps.sync.engine import sync

from conftest import _close, assert_exact_copy, run_step_inprocess
from test_sync import chroma_app_writes

SINCE = "records written since the last sync"


def _read(result: Any) -> int:
    return sum(c["source_records_read"] for c in result.collections)


def _how(result: Any) -> set[str]:
    return {c["source_compared"] for c in result.collections}


def test_chromadb_numbers_every_write_of_a_record(tmp_path: Path) -> None:
    """The contract the shortcut rests on, checked against the installed chromadb: every kind of write moves the
    record's number past the collection's last one, and a delete moves the collection's number."""
    client = chromadb.PersistentClient(path=str(tmp_path / "db"))
    col = client.create_collection("seq_docs", embedding_function=None)  # type: ignore[arg-type]
    rng = np.random.default_rng(3)
    col.add(ids=[f"r{i}" for i in range(6)], embeddings=rng.normal(size=(6, 4)).tolist(), documents=list("abcdef"))
    writes = [
        lambda: col.update(ids=["r0"], embeddings=[[1.0, 2.0, 3.0, 4.0]]),
        lambda: col.update(ids=["r1"], metadatas=[{"k": 1}]),
        lambda: col.update(ids=["r2"], documents=["new"], embeddings=[[0.0, 0.0, 0.0, 1.0]]),
        lambda: col.update(ids=["r3"], uris=["s3://x"]),
        lambda: col.upsert(ids=["r4"], embeddings=[[1.0, 1.0, 1.0, 1.0]], documents=["e"]),  # same document
    ]
    for k, write in enumerate(writes):
        with Catalog(tmp_path / "db") as cat:
            before, (_, last) = cat.sequences("seq_docs"), cat.sequence_marker("seq_docs")
        write()
        with Catalog(tmp_path / "db") as cat:
            after, (_, now) = cat.sequences("seq_docs"), cat.sequence_marker("seq_docs")
        moved = {i for i in after if after[i] != before[i]}
        assert moved == {f"r{k}"} and after[f"r{k}"] > last and now >= after[f"r{k}"], (k, before, after)
    col.delete(ids=["r5"])
    with Catalog(tmp_path / "db") as cat:
        assert "r5" not in cat.sequences("seq_docs") and cat.sequence_marker("seq_docs")[1] > now
    _close(client)


def test_a_sync_reads_only_what_the_app_wrote(
    small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from runbook_lib.steps.sync.reader import SyncSource

    step, _ = run_step_inprocess("migrate", migrate)
    run_id = step.run.run_id
    _, noop = run_step_inprocess("sync", sync, run_id=run_id)
    assert noop.verdict.startswith("IN SYNC") and _read(noop) == 0 and _how(noop) == {SINCE}, noop.collections
    chroma_app_writes(runbook_env["chroma"])  # 2 added, 4 changed, 3 deleted
    fetched: list[str] = []
    real_fetch = SyncSource.fetch

    def counting(self: SyncSource, name: str, ids: Any, **kw: Any) -> Any:
        fetched.extend(ids)
        return real_fetch(self, name, ids, **kw)

    monkeypatch.setattr(SyncSource, "fetch", counting)
    _, changed = run_step_inprocess("sync", sync, run_id=run_id)
    assert changed.totals()["applied"] == 9 and _read(changed) == 6, changed.collections
    assert len(fetched) == 6  # read once, by the plan; the write reuses those records
    assert assert_exact_copy(runbook_env["chroma"], runbook_env["qdrant"]) == 1120 + 2 - 3
    _, again = run_step_inprocess("sync", sync, run_id=run_id)  # the written records were stamped
    assert again.verdict.startswith("IN SYNC") and _read(again) == 0, again.collections
    _, full = run_step_inprocess("sync", sync, run_id=run_id, full_compare=True)
    assert full.verdict.startswith("IN SYNC") and _read(full) == 1119 and _how(full) == {"every record"}


def test_a_directory_swapped_for_an_older_copy_is_read_whole(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    """The app's directory goes back to an older copy and is written again until its numbers pass the ledger's:
    the renumbered record gives it away, every record is read, and the change back is carried over."""
    step, _ = run_step_inprocess("migrate", migrate)
    run_id = step.run.run_id
    live = runbook_env["chroma"]
    older = live.with_name("older_copy")
    shutil.copytree(live, older)
    client = chromadb.PersistentClient(path=str(live))
    client.get_collection("alpha_docs", embedding_function=None).update(ids=["a-0001"], metadatas=[{"v": 2}])
    _close(client)
    _, first = run_step_inprocess("sync", sync, run_id=run_id)
    assert first.totals()["applied"] == 1 and _read(first) == 1
    shutil.rmtree(live)
    shutil.copytree(older, live)  # a-0001 holds its old metadata again, under an old number
    client = chromadb.PersistentClient(path=str(live))
    alpha = client.get_collection("alpha_docs", embedding_function=None)
    for k in range(3):  # numbers past the ledger's marker again
        alpha.update(ids=["a-0002"], metadatas=[{"round": k}])
    _close(client)
    _, second = run_step_inprocess("sync", sync, run_id=run_id)
    by = {c["collection"]: c for c in second.collections}
    assert by["alpha_docs"]["source_compared"] == "every record", by["alpha_docs"]
    assert by["alpha_docs"]["source_changes"]["changed"] == 2 and second.totals()["applied"] == 2
    assert assert_exact_copy(live, runbook_env["qdrant"]) == 1120


def _update(live: Path, writes: list[tuple[str, dict[str, Any]]]) -> None:
    client = chromadb.PersistentClient(path=str(live))
    alpha = client.get_collection("alpha_docs", embedding_function=None)
    for cid, metadata in writes:
        alpha.update(ids=[cid], metadatas=[metadata])
    _close(client)


def _same_numbers(live: Path, ledger_path: Path) -> None:
    """The write numbers repeat exactly: every record's number and the collection's last one are the ledger's."""
    with Catalog(live) as cat, Ledger(ledger_path) as ledger:
        marker = ledger.marker("alpha_docs")
        assert marker is not None and cat.sequence_marker("alpha_docs") == (marker.segment, marker.seq)
        assert cat.sequences("alpha_docs") == ledger.sequences("alpha_docs")


def test_a_directory_overwritten_by_the_backup_and_written_with_the_same_numbers_is_read_whole(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    """The backup's files copied over the live ones (the same SQLite file), then written so that the numbers
    repeat exactly: the record under the ledger's last number is another one, so every record is read."""
    step, _ = run_step_inprocess("migrate", migrate)
    live = runbook_env["chroma"]
    checkpoint = json.loads((step.run.state_dir / "migrate_checkpoint.json").read_text())
    backup = Path(checkpoint["backup_path"]) / "data"
    _update(live, [("a-0001", {"v": 2})])
    _, first = run_step_inprocess("sync", sync, run_id=step.run.run_id)
    assert first.totals()["applied"] == 1
    for src in backup.rglob("*"):  # in place: chroma.sqlite3 keeps its inode
        if src.is_file():
            shutil.copyfile(src, live / src.relative_to(backup))
    _update(live, [("a-0001", {"v": 3})])
    _same_numbers(live, step.run.state_dir / "ledger.sqlite")
    _, second = run_step_inprocess("sync", sync, run_id=step.run.run_id)
    by = {c["collection"]: c for c in second.collections}
    assert by["alpha_docs"]["source_compared"] == "every record", by["alpha_docs"]
    assert second.totals()["applied"] == 1 and by["alpha_docs"]["source_changes"]["changed"] == 1
    assert assert_exact_copy(live, runbook_env["qdrant"]) == 1120


def test_a_directory_swapped_for_a_copy_and_written_with_the_same_numbers_is_read_whole(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    """A copy swapped in (another SQLite file) and written so that the numbers repeat exactly and the record under
    the last number is even the same: the file tells, every record is read."""
    step, _ = run_step_inprocess("migrate", migrate)
    live = runbook_env["chroma"]
    older = live.with_name("older_copy")
    shutil.copytree(live, older)
    _update(live, [("a-0002", {"x": 1}), ("a-0001", {"v": 2})])
    _, first = run_step_inprocess("sync", sync, run_id=step.run.run_id)
    assert first.totals()["applied"] == 2
    live.rename(live.with_name("swapped_out"))
    shutil.copytree(older, live)
    _update(live, [("a-0002", {"x": 99}), ("a-0001", {"v": 2})])
    _same_numbers(live, step.run.state_dir / "ledger.sqlite")
    _, second = run_step_inprocess("sync", sync, run_id=step.run.run_id)
    by = {c["collection"]: c for c in second.collections}
    assert by["alpha_docs"]["source_compared"] == "every record", by["alpha_docs"]
    assert second.totals()["applied"] == 1 and by["alpha_docs"]["source_changes"]["changed"] == 1
    assert assert_exact_copy(live, runbook_env["qdrant"]) == 1120


def test_a_ledger_from_before_write_sequences_reads_everything_once(
    small_source: dict[str, Any], runbook_env: dict[str, Path]
) -> None:
    step, _ = run_step_inprocess("migrate", migrate)
    path = step.run.state_dir / "ledger.sqlite"
    db = sqlite3.connect(path)  # the ledger as an earlier release wrote it: no seq column, no markers
    db.executescript(
        "CREATE TABLE old AS SELECT collection, chroma_id, source, payload, sketch FROM records; DROP TABLE records;"
        "ALTER TABLE old RENAME TO records; DROP TABLE markers;"
    )
    db.close()
    _, first = run_step_inprocess("sync", sync, run_id=step.run.run_id)
    assert first.verdict.startswith("IN SYNC") and _read(first) == 1120 and _how(first) == {"every record"}
    _, second = run_step_inprocess("sync", sync, run_id=step.run.run_id)
    assert second.verdict.startswith("IN SYNC") and _read(second) == 0
    with Ledger(path) as ledger:
        assert None not in ledger.sequences("alpha_docs").values()


@pytest.mark.parametrize(
    "metadata",
    [
        {"a": 1, "b": 1.0, "c": True, "d": "x", "e": None},
        {"ü": "ñ\u2028", "emoji": "🙂", "z": -0.0, "big": 2**63 - 1},
        {"nan": math.nan, "inf": math.inf},
        {"np": np.float32(1.5), "npi": np.int64(3)},
        {"list": [1, 2.5, "x", [True]], "nested": {"k": [math.inf]}},
        {},
        None,
    ],
)
def test_the_quick_payload_digest_is_the_canonical_one(metadata: Any) -> None:
    """Ledgers written before the quick path must still match: both give the very same digest."""
    import hashlib

    for document, uri in (("doc", None), (None, "s3://u"), ("", "")):
        text = json.dumps(
            [document, _canonical(dict(metadata or {})), uri], sort_keys=True, ensure_ascii=False, separators=(",", ":")
        )
        expected = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]
        assert payload_digest(document, metadata, uri) == expected


def test_the_sync_notebook_through_the_runner(small_source: dict[str, Any], runbook_env: dict[str, Path]) -> None:
    """``runbook sync`` executes 06_sync.ipynb with a real kernel: the numbers it files are the library's, the
    notebook and its HTML show the plan with how much of ChromaDB was read."""
    from conftest import run_cli

    step, _ = run_step_inprocess("migrate", migrate)
    chroma_app_writes(runbook_env["chroma"])
    done = run_cli("sync", "--run-id", step.run.run_id)
    assert done.returncode == 0, done.stderr[-3000:]
    run = runbook_env["outputs"] / step.run.run_id
    filed = json.loads((run / "06_sync.json").read_text())
    assert filed["verdict"].startswith("SYNCED") and sum(c["applied"] for c in filed["collections"]) == 9
    assert sum(c["source_records_read"] for c in filed["collections"]) == 6
    assert {c["source_compared"] for c in filed["collections"]} == {SINCE}
    html = (run / "06_sync.html").read_text()
    assert "ChromaDB records read" in html and "Traceback" not in html
    again = run_cli("sync", "--run-id", step.run.run_id, "-p", "full_compare", "true")
    assert again.returncode == 0, again.stderr[-3000:]
    filed = json.loads((run / "06_sync.json").read_text())
    assert filed["verdict"].startswith("IN SYNC") and filed["parameters"]["full_compare"] is True
    assert {c["source_compared"] for c in filed["collections"]} == {"every record"}

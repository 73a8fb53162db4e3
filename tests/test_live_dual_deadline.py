"""A secondary write that hangs (a store that never answers: here a Qdrant URL whose server accepts and never
replies, with a request timeout far away) does not hang the app: after VECTOR_DB_SECONDARY_TIMEOUT it is journaled
as missed and the call returns; while it still hangs, later secondary writes are journaled at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from runbook_lib.app import VectorDBClient
from runbook_lib.app.dual import secondary_deadline_from_env
from runbook_lib.app.journal import Journal
from runbook_lib.errors import ConfigError

from test_app_writes import make_stores, vec


def test_a_hung_secondary_write_is_journaled_at_its_deadline(tmp_path: Path, silent_server: int) -> None:
    dirs = make_stores(tmp_path, {"docs": "cosine"})
    env = dirs.env(
        "dual", QDRANT_URL=f"http://127.0.0.1:{silent_server}", QDRANT_TIMEOUT="120", VECTOR_DB_SECONDARY_TIMEOUT="1"
    )
    with VectorDBClient(env) as db:
        db.add("docs", ["a"], [vec(1)])  # reaches ChromaDB, the primary; Qdrant never answers
        db.upsert("docs", ["b"], [vec(2)])
        assert db.get("docs", include=[]).ids == ["a", "b"]
    entries = Journal(dirs.outputs / "dual_write_journal.jsonl").pending()
    assert [(e.operation, e.ids, e.missed) for e in entries] == [("add", ["a"], "qdrant"), ("upsert", ["b"], "qdrant")]
    assert "did not answer within 1 s (VECTOR_DB_SECONDARY_TIMEOUT)" in entries[0].error
    assert "still busy with an earlier write" in entries[1].error


@pytest.mark.parametrize("raw", ["0", "-1", "soon", "nan"])
def test_a_bad_deadline_is_one_sentence(raw: str) -> None:
    with pytest.raises(ConfigError, match=r"VECTOR_DB_SECONDARY_TIMEOUT=.* is not a number of seconds"):
        secondary_deadline_from_env({"VECTOR_DB_SECONDARY_TIMEOUT": raw})
    assert secondary_deadline_from_env({}) == 30.0

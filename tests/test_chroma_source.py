"""The Chroma reader's own guarantees: it answers the Chroma-side interface (:mod:`runbook_lib.chroma.base`) the
steps call, and CHROMA_TIMEOUT reaches chromadb's HTTP client, so a server that accepts a connection and never
answers is a one-sentence error after the timeout, not a run that hangs forever."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from runbook_lib.chroma.base import ChromaCatalog, ChromaReader
from runbook_lib.chroma.catalog import Catalog
from runbook_lib.chroma.connect import open_source
from runbook_lib.chroma.source import ChromaSource
from runbook_lib.config.settings import load_settings
from runbook_lib.errors import ConfigError
from runbook_lib.steps.sync.reader import SyncSource


def test_the_source_and_the_catalog_answer_the_interface(
    small_source: dict[str, dict[str, Any]], runbook_env: dict[str, Path]
) -> None:
    settings = load_settings().chroma
    with Catalog(runbook_env["chroma"]) as catalog, open_source(settings) as source:
        assert isinstance(source, ChromaReader) and isinstance(catalog, ChromaCatalog)
        assert not isinstance(catalog, ChromaReader)
        assert isinstance(SyncSource(settings, runbook_env["chroma"]), ChromaCatalog)
        assert catalog.collection_names() == source.collection_names() == sorted(small_source)
        for name in ("alpha_docs", "empty_docs"):
            assert catalog.snapshot_ids(name) == source.snapshot_ids(name)
            assert catalog.dimension(name) == source.dimension(name)
        ids = source.snapshot_ids("alpha_docs")
        assert source.present_ids("alpha_docs", [ids[0], "no-such-id", ids[-1]]) == {ids[0], ids[-1]}
        vector = source.fetch("alpha_docs", [ids[3]]).embeddings[0]
        assert source.search("alpha_docs", vector.tolist(), 3, None)[0] == ids[3]
        assert source.query_ids("alpha_docs", np.stack([vector]), 3)[0][0] == ids[3]
        identity = source.identity()
        assert identity.kind == "persistent" and identity.location == str(runbook_env["chroma"])
        source.heartbeat()


def test_chroma_timeout_reaches_the_http_client(silent_server: int) -> None:
    settings = load_settings({"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(silent_server), "CHROMA_TIMEOUT": "1"})
    outcome: dict[str, object] = {}

    def open_source() -> None:
        started = time.monotonic()
        try:
            ChromaSource.open(settings.chroma)
        except Exception as exc:  # recorded and checked below
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    worker = threading.Thread(target=open_source, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the reader waited on a hung server instead of timing out"
    error = outcome.get("error")
    assert isinstance(error, ConfigError), error
    assert "Cannot reach the Chroma server" in str(error) and "\n" not in str(error)

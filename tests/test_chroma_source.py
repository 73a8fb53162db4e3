"""The Chroma reader's own guarantees: CHROMA_TIMEOUT reaches chromadb's HTTP client, so a server that accepts a
connection and never answers is a one-sentence error after the timeout, not a run that hangs forever."""

from __future__ import annotations

import threading
import time

from runbook_lib.chroma.source import ChromaSource
from runbook_lib.config.settings import load_settings
from runbook_lib.errors import ConfigError


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

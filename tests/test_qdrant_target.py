"""Server-only paths of the Qdrant target, as far as this machine allows (no Qdrant server can be installed):
retries and permanent errors over real HTTP against a loopback stub that answers like an overloaded or
refusing server, and the settings that guard the API key."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from tenacity import wait_none

from runbook_lib import qdrant_target
from runbook_lib.errors import ConfigError, TargetError
from runbook_lib.qdrant_target import QdrantTarget
from runbook_lib.settings import QdrantSettings, load_settings


class _Stub(BaseHTTPRequestHandler):
    write_status = 503
    requests: list[tuple[str, str, str | None]] = []  # noqa: RUF012

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        type(self).requests.append(("GET", self.path, self.headers.get("api-key")))
        self._reply(200, {"result": {"collections": []}, "status": "ok", "time": 0.0})

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        type(self).requests.append(("PUT", self.path, self.headers.get("api-key")))
        status = type(self).write_status
        self._reply(status, {"status": {"error": f"stub says {status}"}, "time": 0.0})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, type[_Stub]]]:
    handler = type("Stub", (_Stub,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qdrant_target._upsert_with_retry.retry, "wait", wait_none())


def _upsert(url: str) -> None:
    with QdrantTarget(QdrantSettings(path=None, url=url, api_key="local-key", timeout_s=5)) as target:  # type: ignore[arg-type]
        target.upsert("books", ["00000000-0000-0000-0000-000000000001"], [[0.1, 0.2]], [{}], batch_label="batch 7")


def test_transient_errors_are_retried_then_named(stub: tuple[str, type[_Stub]], no_backoff: None) -> None:
    url, handler = stub
    handler.write_status = 503
    with pytest.raises(TargetError, match=r"batch 7 of collection 'books'.*503") as info:
        _upsert(url)
    puts = [r for r in handler.requests if r[0] == "PUT"]
    assert len(puts) == 6  # the retry policy: 6 tries
    assert all(r[2] == "local-key" for r in handler.requests)  # the key goes in the header
    assert info.value.collection == "books"


def test_permanent_error_is_not_retried(stub: tuple[str, type[_Stub]], no_backoff: None) -> None:
    url, handler = stub
    handler.write_status = 400
    with pytest.raises(TargetError, match=r"batch 7 of collection 'books'"):
        _upsert(url)
    assert len([r for r in handler.requests if r[0] == "PUT"]) == 1


def test_transient_classification() -> None:
    import httpx
    from qdrant_client.http.exceptions import UnexpectedResponse

    def resp(code: int) -> UnexpectedResponse:
        return UnexpectedResponse(status_code=code, reason_phrase="", content=b"", headers=httpx.Headers())

    assert qdrant_target.is_transient(resp(503)) and qdrant_target.is_transient(resp(429))
    assert not qdrant_target.is_transient(resp(400)) and not qdrant_target.is_transient(resp(404))
    assert qdrant_target.is_transient(httpx.ConnectError("refused"))
    assert not qdrant_target.is_transient(ValueError("bad vector"))


def test_api_key_rules() -> None:
    with pytest.raises(ConfigError, match="Refusing to send QDRANT_API_KEY over plain http"):
        load_settings({"QDRANT_URL": "http://10.1.2.3:6333", "QDRANT_API_KEY": "k"})
    ok = load_settings(
        {
            "QDRANT_URL": "http://10.1.2.3:6333",
            "QDRANT_API_KEY": "key-xyz-789",
            "RUNBOOK_ALLOW_INSECURE_API_KEY": "true",
        }
    )
    assert ok.qdrant.api_key == "key-xyz-789" and "key-xyz-789" not in repr(ok)
    assert load_settings({"QDRANT_URL": "http://127.0.0.1:6333", "QDRANT_API_KEY": "k"}).qdrant.is_server
    assert load_settings({"QDRANT_URL": "https://x.cloud.qdrant.io", "QDRANT_API_KEY": "k"}).qdrant.is_server
    public = json.dumps(ok.public())
    assert "key-xyz-789" not in public and "qdrant_api_key_set" in public

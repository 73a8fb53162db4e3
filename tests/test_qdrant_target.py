"""Server-only paths of the Qdrant target, as far as this machine allows (no Qdrant server can be installed):
retries and permanent errors over real HTTP against a loopback stub that answers like an overloaded or
refusing server, and the settings that guard the API key."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tenacity import wait_none

from runbook_lib.config.settings import QdrantSettings, load_settings
from runbook_lib.errors import ConfigError, TargetError
from runbook_lib.qdrant import target as qdrant_target
from runbook_lib.qdrant.target import QdrantTarget


class _Stub(BaseHTTPRequestHandler):
    write_status = 503
    requests: list[tuple[str, str, str | None]] = []  # noqa: RUF012
    bodies: list[dict[str, Any]] = []  # noqa: RUF012

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
        body = self.rfile.read(length)
        type(self).requests.append(("PUT", self.path, self.headers.get("api-key")))
        status = type(self).write_status
        if status == 200:  # acknowledge the write the way a server does
            type(self).bodies.append(json.loads(body))
            self._reply(200, {"result": {"operation_id": 1, "status": "completed"}, "status": "ok", "time": 0.0})
            return
        self._reply(status, {"status": {"error": f"stub says {status}"}, "time": 0.0})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[tuple[str, type[_Stub]]]:
    handler = type("Stub", (_Stub,), {"requests": [], "bodies": []})
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
    assert ok.qdrant.api_key is not None and ok.qdrant.api_key.get_secret_value() == "key-xyz-789"
    assert "key-xyz-789" not in repr(ok) and "key-xyz-789" not in str(ok.model_dump())
    assert load_settings({"QDRANT_URL": "http://127.0.0.1:6333", "QDRANT_API_KEY": "k"}).qdrant.is_server
    assert load_settings({"QDRANT_URL": "https://x.cloud.qdrant.io", "QDRANT_API_KEY": "k"}).qdrant.is_server
    public = json.dumps(ok.public())
    assert "key-xyz-789" not in public and "qdrant_api_key_set" in public


def test_parallel_writers_deliver_every_batch_once(
    small_source: dict[str, Any], stub: tuple[str, type[_Stub]], no_backoff: None
) -> None:
    """The server path of the pipeline (several upserts in flight): every point arrives exactly once, with
    its vector and payload, and the checkpoint watermark ends at the collection's size."""
    import numpy as np

    from runbook_lib.chroma.source import ChromaSource
    from runbook_lib.config.settings import load_settings
    from runbook_lib.core.mapping import normalise_rows, point_id
    from runbook_lib.core.plan import plan_collection
    from runbook_lib.steps.migrate.pipeline import copy_collection

    url, handler = stub
    handler.write_status = 200
    settings = load_settings()
    marks: list[int] = []
    with (
        ChromaSource.open(settings.chroma) as source,
        QdrantTarget(
            QdrantSettings(path=None, url=url, timeout_s=5)  # type: ignore[arg-type]
        ) as target,
    ):
        assert not target.is_local
        ids = source.snapshot_ids("alpha_docs")
        entry = plan_collection(source, "alpha_docs", run_id="r", ids=ids)
        copy_collection(
            source,
            target,
            entry,
            ids=ids,
            start=0,
            batch_size=37,
            workers=4,
            on_progress=lambda done, n: marks.append(done),
        )
        expected = source.fetch("alpha_docs", ids)
    assert marks == sorted(marks) and marks[-1] == 700  # the watermark only moves forward, to the end
    sent = [
        (pid, vec, payload)
        for b in (body["batch"] for body in handler.bodies)
        for pid, vec, payload in zip(b["ids"], b["vectors"], b["payloads"], strict=True)
    ]
    assert len(sent) == 700 and len({pid for pid, _, _ in sent}) == 700
    by_id = {pid: (vec, payload) for pid, vec, payload in sent}
    vectors = normalise_rows(expected.embeddings)
    for k, cid in enumerate(ids):
        vec, payload = by_id[point_id(cid)]
        assert np.array_equal(np.asarray(vec, dtype=np.float32), vectors[k])  # the very float32 the runbook holds
        assert payload["chroma_id"] == cid and payload["document"] == expected.documents[k]


@pytest.mark.parametrize(
    "payload",
    [
        {"chroma_id": "a", "document": "plain", "metadata": {"i": 1, "f": 0.1, "b": True, "n": None}},
        {"chroma_id": "ü/🙂", "document": 'ñ\u2028"quoted"', "metadata": {"big": 2**63 - 1, "neg": -(2**63)}},
        {"chroma_id": "c", "document": None, "metadata": {"list": [1, 2.5, "x"], "nested": {"k": [True, None]}}},
        {"chroma_id": "d", "document": "", "uri": "s3://b/k?x=1&y=2", "metadata": {}},
    ],
)
def test_the_rest_body_is_what_qdrant_client_would_send(payload: dict[str, Any]) -> None:
    """Same request as qdrant-client's own encoding once parsed: ids and payloads equal, every vector the same
    float32 (orjson writes the shortest float32 form; the server parses it back to that float32)."""
    import numpy as np
    from qdrant_client import models
    from qdrant_client.http.api.points_api import jsonable_encoder

    from runbook_lib.qdrant.rest_body import points_batch_json

    rng = np.random.default_rng(5)
    vectors = np.concatenate([rng.normal(size=(3, 7)), [[1e-38, -0.0, 3.4e38, 1 / 3, 0.1, 1e-45, 7.0]]])
    vectors = vectors.astype(np.float32)
    ids = [f"00000000-0000-0000-0000-00000000000{i}" for i in range(4)]
    payloads = [payload] * 4
    ours = json.loads(points_batch_json(ids, vectors, payloads) or b"null")
    theirs = json.loads(
        jsonable_encoder(models.PointsBatch(batch=models.Batch(ids=ids, vectors=vectors.tolist(), payloads=payloads)))
    )
    assert ours["batch"]["ids"] == theirs["batch"]["ids"] and ours["batch"]["payloads"] == theirs["batch"]["payloads"]
    assert np.array_equal(np.asarray(ours["batch"]["vectors"], dtype=np.float32), vectors)
    assert np.array_equal(np.asarray(theirs["batch"]["vectors"], dtype=np.float32), vectors)


def test_what_orjson_would_write_differently_goes_through_qdrant_client() -> None:
    import numpy as np

    from runbook_lib.qdrant.rest_body import points_batch_json

    ids, one = ["00000000-0000-0000-0000-000000000001"], np.ones((1, 2), dtype=np.float32)
    assert points_batch_json(ids, one, [{"m": {"x": float("nan")}}]) is None
    assert points_batch_json(ids, one, [{"document": "lone \ud800 surrogate"}]) is None
    assert points_batch_json(ids, one, [{"m": 2**64}]) is None
    assert points_batch_json(ids, np.array([[np.inf, 0]], dtype=np.float32), [{}]) is None
    assert points_batch_json(ids, [[1.0, 2.0]], [{}]) is None  # type: ignore[arg-type]  # lists: the client's path


# --- deferred indexing: the collection's own threshold comes back, only on collections the run created ------------
def test_indexing_to_restore_decision() -> None:
    decide = qdrant_target.indexing_to_restore
    assert decide(deferred_from=12_345, current=0) == 12_345  # the run switched it off: its own value comes back
    assert decide(deferred_from=None, current=0) is None  # not created (or not deferred) by the run: never touched
    assert decide(deferred_from=None, current=5_000) is None
    assert decide(deferred_from=12_345, current=7_000) is None  # someone set it meanwhile: kept


def test_local_mode_indexing_is_untouched(tmp_path: Path) -> None:
    with QdrantTarget(QdrantSettings(path=tmp_path / "q")) as target:
        assert target.create_collection("books", size=2, distance="Cosine", defer_indexing=True) is None
        assert target.indexing_threshold("books") == 20_000  # local mode's default, never switched off
        assert target.finish_bulk_load("books") is None
        assert target.finish_bulk_load("books", restore_to=777) is None
        assert target.indexing_threshold("books") == 20_000


class _ConfigStub(BaseHTTPRequestHandler):
    """A Qdrant server as far as collection configuration goes: create (PUT), read (GET), update (PATCH)."""

    template: dict[str, Any] = {}  # noqa: RUF012
    thresholds: dict[str, int] = {}  # noqa: RUF012
    calls: list[tuple[str, str, dict[str, Any] | None]] = []  # noqa: RUF012
    own_threshold = 12_345

    def _reply(self, body: Any) -> None:
        data = json.dumps({"result": body, "status": "ok", "time": 0.0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any] | None:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def do_GET(self) -> None:
        cls = type(self)
        path = self.path.split("?")[0]
        cls.calls.append(("GET", path, None))
        if path == "/collections":
            self._reply({"collections": [{"name": n} for n in cls.thresholds]})
            return
        info = json.loads(json.dumps(cls.template))
        info["config"]["optimizer_config"]["indexing_threshold"] = cls.thresholds[path.rsplit("/", 1)[1]]
        self._reply(info)

    def do_PUT(self) -> None:
        cls = type(self)
        path, body = self.path.split("?")[0], self._body()
        cls.calls.append(("PUT", path, body))
        cls.thresholds[path.rsplit("/", 1)[1]] = cls.own_threshold
        self._reply(True)

    def do_PATCH(self) -> None:
        cls = type(self)
        path, body = self.path.split("?")[0], self._body()
        cls.calls.append(("PATCH", path, body))
        value = ((body or {}).get("optimizers_config") or {}).get("indexing_threshold")
        if value is not None:
            cls.thresholds[path.rsplit("/", 1)[1]] = value
        self._reply(True)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def config_stub(tmp_path: Path) -> Iterator[tuple[str, type[_ConfigStub]]]:
    from qdrant_client import QdrantClient, models

    local = QdrantClient(path=str(tmp_path / "template"))
    local.create_collection("t", vectors_config=models.VectorParams(size=2, distance=models.Distance.COSINE))
    template = json.loads(local.get_collection("t").model_dump_json())
    local.close()
    handler = type("ConfigStub", (_ConfigStub,), {"template": template, "thresholds": {"theirs": 0}, "calls": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def _patches(handler: type[_ConfigStub], name: str) -> list[Any]:
    return [
        b["optimizers_config"]["indexing_threshold"] for m, p, b in handler.calls if m == "PATCH" and p.endswith(name)
    ]


def test_deferred_indexing_restores_the_collections_own_threshold(config_stub: tuple[str, type[_ConfigStub]]) -> None:
    url, handler = config_stub
    settings = QdrantSettings(path=None, url=url, timeout_s=5)  # type: ignore[arg-type]
    with QdrantTarget(settings) as target:
        assert target.create_collection("books", size=2, distance="Cosine", defer_indexing=True) == 12_345
        create = next(b for m, p, b in handler.calls if m == "PUT")
        assert (create or {}).get("optimizers_config") is None  # created with its own settings, then deferred
        assert handler.thresholds["books"] == 0 and _patches(handler, "books") == [0]
        assert target.finish_bulk_load("books") == 12_345  # its own value, not a fixed number
        assert handler.thresholds["books"] == 12_345 and _patches(handler, "books") == [0, 12_345]
        # a collection the run did not create (on_existing=resume) is never touched, even with indexing off
        assert target.finish_bulk_load("theirs") is None
        assert target.finish_bulk_load("theirs", restore_to=None) is None
        assert _patches(handler, "theirs") == [] and handler.thresholds["theirs"] == 0
        assert target.create_collection("plain", size=2, distance="Cosine", defer_indexing=False) is None
        assert target.finish_bulk_load("plain") is None and _patches(handler, "plain") == []
        handler.own_threshold = 50_000
        assert target.create_collection("later", size=2, distance="Cosine") == 50_000
    # a resumed run (a new process) passes what create_collection returned, kept in its checkpoint
    with QdrantTarget(settings) as target:
        assert target.finish_bulk_load("later") is None  # this target did not create it and was not told
        assert target.finish_bulk_load("later", restore_to=50_000) == 50_000
        handler.thresholds["later"] = 9_000  # someone tuned it meanwhile: kept
        assert target.finish_bulk_load("later", restore_to=50_000) is None
    assert handler.thresholds["later"] == 9_000

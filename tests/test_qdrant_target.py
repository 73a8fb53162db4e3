"""The Qdrant target over qdrant-client: every method of the Qdrant-side interface in local mode, and the server-only
paths as far as this machine allows (no Qdrant server can be installed): retries and permanent errors over real HTTP
against a loopback stub that answers like an overloaded or refusing server, collection configuration and payload
indexes against a stub that keeps them, and the settings that guard the API key."""

from __future__ import annotations

import inspect
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import models
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_none

from runbook_lib.config.settings import QdrantSettings, load_settings
from runbook_lib.errors import ConfigError, TargetError
from runbook_lib.qdrant import target as qdrant_target
from runbook_lib.qdrant.base import QdrantStore
from runbook_lib.qdrant.connect import holds_storage, open_target
from runbook_lib.qdrant.retries import is_transient
from runbook_lib.qdrant.target import QdrantTarget

#: What a Qdrant server answers at ``/`` (qdrant-client's version check and ``info()``).
VERSION_INFO = {"title": "qdrant - vector search engine", "version": "1.20.0", "commit": "stub"}


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
        if self.path == "/":
            self._reply(200, VERSION_INFO)
            return
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
    """The step's retry policy (6 tries) without its waits."""
    policy = retry(retry=retry_if_exception(is_transient), stop=stop_after_attempt(6), wait=wait_none(), reraise=True)
    monkeypatch.setattr(qdrant_target, "retry_transient", policy)


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


def test_an_apps_target_retries_briefly(stub: tuple[str, type[_Stub]]) -> None:
    """``fail_fast`` (the app layer): 3 tries within about a second, then the error."""
    url, handler = stub
    handler.write_status = 503
    settings = QdrantSettings(path=None, url=url, timeout_s=5)  # type: ignore[arg-type]
    with (
        open_target(settings, fail_fast=True) as target,
        pytest.raises(TargetError, match=r"an app write of collection 'books'.*503"),
    ):
        target.upsert("books", [_point(1)], [[0.1, 0.2]], [{}], batch_label="an app write")
    assert len([r for r in handler.requests if r[0] == "PUT"]) == 3


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

    assert is_transient(resp(503)) and is_transient(resp(429))
    assert not is_transient(resp(400)) and not is_transient(resp(404))
    assert is_transient(httpx.ConnectError("refused"))
    assert not is_transient(ValueError("bad vector"))


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
        assert target.capabilities.concurrent_writes
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
    indexes: dict[str, dict[str, Any]] = {}  # noqa: RUF012
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
        if path == "/":
            data = json.dumps(VERSION_INFO).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        if path == "/collections":
            self._reply({"collections": [{"name": n} for n in cls.thresholds]})
            return
        info = json.loads(json.dumps(cls.template))
        name = path.rsplit("/", 1)[1]
        info["config"]["optimizer_config"]["indexing_threshold"] = cls.thresholds[name]
        info["payload_schema"] = cls.indexes.get(name, {})
        self._reply(info)

    def do_PUT(self) -> None:
        cls = type(self)
        path, body = self.path.split("?")[0], self._body()
        cls.calls.append(("PUT", path, body))
        if path.endswith("/index"):  # a payload index: the server reports it with its type
            schema = (body or {})["field_schema"]
            data_type = schema["type"] if isinstance(schema, dict) else schema
            cls.indexes.setdefault(path.split("/")[2], {})[body["field_name"]] = {"data_type": data_type, "points": 0}
            self._reply({"operation_id": 1, "status": "completed"})
            return
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
    handler = type(
        "ConfigStub", (_ConfigStub,), {"template": template, "thresholds": {"theirs": 0}, "calls": [], "indexes": {}}
    )
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


# --- the Qdrant-side interface ------------------------------------------------------------------------------------
#: The methods of the Qdrant-side interface (the Protocol's own, and the context manager's).
INTERFACE_METHODS = sorted(
    n for n, v in vars(QdrantStore).items() if callable(v) and (not n.startswith("_") or n in ("__enter__", "__exit__"))
)


def _parameters(method: Any) -> list[tuple[str, Any, Any]]:
    return [(p.name, p.kind, p.default) for p in inspect.signature(method).parameters.values()]


def test_qdrant_target_implements_the_interface(tmp_path: Path) -> None:
    """Every method of the Protocol is QdrantTarget's own (none falls back to the Protocol's empty body)."""
    assert {"upsert", "scroll", "query", "create_payload_index", "__exit__"} <= set(INTERFACE_METHODS)
    missing = [n for n in INTERFACE_METHODS if n not in vars(QdrantTarget)]
    assert not missing, f"QdrantTarget lacks {missing}"
    differ = [
        n for n in INTERFACE_METHODS if _parameters(getattr(QdrantTarget, n)) != _parameters(getattr(QdrantStore, n))
    ]
    assert not differ, f"QdrantTarget's parameters differ from the interface's in {differ}"
    with open_target(QdrantSettings(path=tmp_path / "q")) as target:
        assert isinstance(target, QdrantTarget) and isinstance(target, QdrantStore)
        assert target.capabilities.kind == "local" and target.capabilities.aliases
        assert not (target.capabilities.cluster or target.capabilities.engine or target.capabilities.hnsw)
        assert not target.capabilities.payload_indexes and not target.capabilities.concurrent_writes
        assert target.identity() == {
            "kind": "local",
            "path": str(tmp_path / "q"),
            "client_version": target.identity()["client_version"],
        }
        target.ping()


def _point(i: int) -> str:
    return f"00000000-0000-0000-0000-{i:012d}"


def test_every_method_in_local_mode(tmp_path: Path) -> None:
    even = models.Filter(must=[models.FieldCondition(key="metadata.even", match=models.MatchValue(value=True))])
    vectors = np.eye(6, 4, dtype=np.float32) + 0.5
    payloads = [{"chroma_id": f"c{i}", "document": f"doc {i}", "metadata": {"even": i % 2 == 0}} for i in range(6)]
    with open_target(QdrantSettings(path=tmp_path / "q")) as target:
        assert target.create_collection("books", size=4, distance="Dot", hnsw={"m": 8, "ef_construct": 50}) is None
        target.set_alias("library", "books")
        assert target.collection_names() == ["books"] and target.aliases() == {"library": "books"}
        assert target.exists("books") and target.exists("library") and not target.exists("nope")
        with target.bulk_writes("books") as flush:
            target.upsert("books", [_point(i) for i in range(6)], vectors, payloads, batch_label="batch 1")
            flush()
        assert target.describe_collection("books") == qdrant_target.TargetCollection("books", 4, "Dot", 6)
        assert target.count("books") == 6 and target.count("library", even) == 3
        target.create_payload_index("books", "metadata.even", "bool")  # local mode ignores payload indexes
        assert target.payload_indexes("books") is None
        assert target.finish_bulk_load("books", progress=lambda line: pytest.fail(line)) is None

        page, offset = target.scroll("books", limit=2, with_vectors=False, with_payload=["chroma_id"])
        assert [p.payload for p in page] == [{"chroma_id": "c0"}, {"chroma_id": "c1"}] and offset == _point(2)
        page, offset = target.scroll("books", limit=10, query_filter=even, with_payload=False)
        assert [str(p.id) for p in page] == [_point(0), _point(2), _point(4)] and offset is None
        assert page[0].payload is None and np.allclose(page[0].vector, vectors[0])
        (one,) = target.retrieve("books", [_point(1)], with_vectors=False, with_payload=["document"])
        assert one.payload == {"document": "doc 1"} and one.vector is None
        assert sorted(target.iter_chroma_ids("books", page=4)) == [(_point(i), f"c{i}") for i in range(6)]

        hits = target.query("books", vectors[3].tolist(), limit=2, exact=True, with_vectors=True, retry=False)
        assert str(hits[0].id) == _point(3) and np.allclose(hits[0].vector, vectors[3])
        filtered = target.query("books", vectors[3].tolist(), limit=6, query_filter=even)
        assert sorted(str(h.id) for h in filtered) == [_point(0), _point(2), _point(4)]
        assert all(h.payload == payloads[int(str(h.id)[-1])] and h.vector is None for h in filtered)

        target.overwrite_payloads("books", {_point(0): {"chroma_id": "c0", "metadata": {"even": False}}})
        (zero,) = target.retrieve("books", [_point(0)], with_vectors=True)
        assert zero.payload == {"chroma_id": "c0", "metadata": {"even": False}} and np.allclose(zero.vector, vectors[0])
        target.delete_points("books", [_point(1), _point(2)], query_filter=even)  # only the ids that match: 2
        assert target.count("books") == 5 and not target.retrieve("books", [_point(2)])
        target.delete_points("books", query_filter=even)  # 4
        target.delete_points("books", [_point(5)])
        target.delete_points("books", [])
        assert sorted(str(p.id) for p in target.scroll("books", limit=10)[0]) == [_point(0), _point(1), _point(3)]
        with pytest.raises(ValueError, match="needs ids or a filter"):
            target.delete_points("books")

        with pytest.raises(TargetError, match=r"'nope'"):
            target.count("nope")
        target.delete_alias("library")
        target.delete_collection("books")
        assert target.collection_names() == [] and target.aliases() == {}


def test_server_capabilities_identity_hnsw_and_payload_indexes(config_stub: tuple[str, type[_ConfigStub]]) -> None:
    url, handler = config_stub
    settings = QdrantSettings(path=None, url=url, api_key="secret-key-123", timeout_s=5, allow_insecure_api_key=True)  # type: ignore[arg-type]
    with open_target(settings) as target:
        assert target.capabilities == qdrant_target.SERVER_CAPABILITIES and target.capabilities.kind == "server"
        identity = target.identity()
        assert identity["kind"] == "server" and identity["url"] == url and identity["server_version"] == "1.20.0"
        assert identity["transport"] == "REST" and "secret-key-123" not in json.dumps(identity)
        target.create_collection("books", size=2, distance="Cosine", hnsw={"m": 32, "ef_construct": 200})
        create = next(b for m, p, b in handler.calls if m == "PUT" and p == "/collections/books")
        assert (create or {})["hnsw_config"] == {"m": 32, "ef_construct": 200}
        with pytest.raises(ConfigError, match="Unknown HNSW parameters"):
            target.create_collection("other", size=2, distance="Cosine", hnsw={"M": 32})
        assert target.payload_indexes("books") == {}
        for field, kind in [("metadata.tag", "keyword"), ("metadata.i", "integer"), ("document", "text")]:
            target.create_payload_index("books", field, kind)  # type: ignore[arg-type]
        text = next(b for m, p, b in handler.calls if m == "PUT" and b and b.get("field_name") == "document")
        assert (text or {})["field_schema"] == {"type": "text", "tokenizer": "word", "lowercase": False}
        assert target.payload_indexes("books") == {
            "metadata.tag": "keyword",
            "metadata.i": "integer",
            "document": "text",
        }
        with pytest.raises(ConfigError, match="Unknown payload index type 'geo'"):
            target.create_payload_index("books", "where", "geo")  # type: ignore[arg-type]
        lines: list[str] = []
        assert target.finish_bulk_load("books", progress=lines.append) == 12_345
        assert lines and "restored" in lines[0]


def test_the_version_check_is_kept(stub: tuple[str, type[_Stub]]) -> None:
    """qdrant-client asks the server for its version (``check_compatibility``), and so does ``identity()``."""
    url, handler = stub
    with QdrantTarget(QdrantSettings(path=None, url=url, timeout_s=5)) as target:  # type: ignore[arg-type]
        assert target.identity()["server_version"] == VERSION_INFO["version"]
    assert [r for r in handler.requests if r[:2] == ("GET", "/")]


def test_holds_storage(tmp_path: Path) -> None:
    """A reader opens an embedded target only once it has storage (opening local mode would create it)."""
    assert holds_storage(QdrantSettings(url="http://127.0.0.1:6333"))
    local = QdrantSettings(path=tmp_path / "local")
    assert not holds_storage(local)
    (tmp_path / "local").mkdir()
    assert not holds_storage(local)  # a folder, but no local-mode store in it
    with open_target(local):
        pass
    assert holds_storage(local)
    edge = QdrantSettings(edge_path=tmp_path / "edge")
    assert not holds_storage(edge)
    (tmp_path / "edge").mkdir()
    assert holds_storage(edge)


def test_readers_of_an_edge_target_with_no_storage_yet(
    small_source: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dry run and the app on Qdrant Edge before anything was migrated: no error, nothing created."""
    from runbook_lib.app import VectorDBClient
    from runbook_lib.steps.dry_run.engine import ESTIMATED_POINTS_PER_S, dry_run

    from conftest import run_step_inprocess

    edge = runbook_env["qdrant"].parent / "qdrant_edge"
    monkeypatch.delenv("QDRANT_PATH", raising=False)
    monkeypatch.setenv("QDRANT_EDGE_PATH", str(edge))
    _, result = run_step_inprocess("dry-run", dry_run)
    assert result.ok and result.existing_targets == [] and not edge.exists()
    alpha = next(p for p in result.plan if p["source"] == "alpha_docs")
    assert alpha["estimated_s"] == round(700 / (ESTIMATED_POINTS_PER_S["edge"] * 1536 / 64), 1)  # Edge's write rate
    with VectorDBClient() as db, pytest.raises(ConfigError, match=r"^QDRANT_EDGE_PATH points to .*no Qdrant storage"):
        db.search("alpha_docs", [0.1] * 16)
    assert not edge.exists()

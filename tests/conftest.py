"""Shared fixtures: real ChromaDB (persistent directory and a `chroma run` server), real Qdrant (Qdrant Edge, the
engine in-process, and qdrant-client's local mode).

Every test gets its own CHROMA_PERSIST_DIR / Qdrant target / RUNBOOK_OUTPUTS under tmp_path through the
``runbook_env`` fixture; nothing touches the project's data/ or outputs/. The target is the engine, Qdrant Edge
(``QDRANT_EDGE_PATH``), unless a test asks for ``qdrant_kind``: tests marked ``@on_both_targets`` (the congruence
subset: exact copy, forward sync, the app layer's search and filters, rollback) run once on Edge and once on
qdrant-client's local mode (``QDRANT_PATH``), and where the two differ the assertion is the engine's (= Chroma's).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import chromadb
import numpy as np
import pytest

BIN = Path(sys.executable).parent


def make_small_db(path: Path, *, seed: int = 0) -> dict[str, dict[str, Any]]:
    """A small persistent ChromaDB: cosine (metadata), l2 (configuration), ip, and an empty collection."""
    client = chromadb.PersistentClient(path=str(path))
    rng = np.random.default_rng(seed)
    spec: dict[str, dict[str, Any]] = {}
    for name, space, declared, dim, n in [
        ("alpha_docs", "cosine", "metadata", 16, 700),
        ("beta_docs", "l2", "configuration", 8, 300),
        ("gamma_docs", "ip", "metadata", 4, 120),
        ("empty_docs", "cosine", "metadata", 4, 0),
    ]:
        kwargs: dict[str, Any] = (
            {"metadata": {"hnsw:space": space}}
            if declared == "metadata"
            else {"configuration": {"hnsw": {"space": space}}}
        )
        col = client.create_collection(name, embedding_function=None, **kwargs)
        ids = [f"{name[:1]}-{i:04d}" for i in range(n)]
        if n:
            col.add(
                ids=ids,
                embeddings=rng.normal(size=(n, dim)).astype(np.float32).tolist(),
                documents=[None if i % 17 == 0 else f"document {i} of {name} — café ✓" for i in range(n)],
                metadatas=[
                    None if i % 23 == 0 else {"i": i, "half": i / 2, "even": i % 2 == 0, "tag": f"t{i % 5}"}
                    for i in range(n)
                ],
                uris=[f"s3://bucket/{name}/{i}.txt" if i % 3 == 0 else None for i in range(n)],
            )
        spec[name] = {"space": space, "dim": dim, "count": n, "ids": ids}
    _close(client)
    return spec


def _close(client: Any) -> None:
    close = getattr(client, "close", None)
    if callable(close):
        close()
    from chromadb.api.shared_system_client import SharedSystemClient

    SharedSystemClient.clear_system_cache()


#: The embedded targets a congruence test runs on: the engine (Qdrant Edge) and qdrant-client's local mode.
TARGET_KINDS = ("edge", "local")
#: The variable that names each embedded target's folder.
TARGET_VARIABLE = {"edge": "QDRANT_EDGE_PATH", "local": "QDRANT_PATH"}
#: Run a test on Edge and on local mode (it must use ``runbook_env`` or ``qdrant_kind``); the congruence subset.
on_both_targets = pytest.mark.parametrize("qdrant_kind", TARGET_KINDS)
#: Run a test on local mode only: for what Qdrant Edge lacks (aliases), where local mode stands in for a server.
on_local_mode = pytest.mark.parametrize("qdrant_kind", ["local"])


@pytest.fixture
def qdrant_kind() -> str:
    """Which embedded target ``runbook_env`` sets: Qdrant Edge unless the test is marked ``@on_both_targets``."""
    return "edge"


@pytest.fixture
def runbook_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, qdrant_kind: str) -> dict[str, Path]:
    """Environment for one test: its own source dir, Qdrant target folder (Edge's ``QDRANT_EDGE_PATH``, or local
    mode's ``QDRANT_PATH`` for ``qdrant_kind == "local"``) and outputs; no secrets, no server."""
    for var in (
        "CHROMA_HOST",
        "CHROMA_PORT",
        "CHROMA_SSL",
        "CHROMA_TENANT",
        "CHROMA_DATABASE",
        "CHROMA_AUTH_TOKEN",
        "CHROMA_API_KEY",
        "QDRANT_URL",
        "QDRANT_API_KEY",
        "QDRANT_EDGE_PATH",
        "QDRANT_PATH",
        "VECTOR_DB",
        "RUNBOOK_HEADLESS",
    ):
        monkeypatch.delenv(var, raising=False)
    paths = {
        "chroma": tmp_path / "chroma_db",
        "qdrant": tmp_path / "qdrant",
        "outputs": tmp_path / "outputs",
    }
    monkeypatch.setenv("CHROMA_PERSIST_DIR", str(paths["chroma"]))
    monkeypatch.setenv(TARGET_VARIABLE[qdrant_kind], str(paths["qdrant"]))
    monkeypatch.setenv("RUNBOOK_OUTPUTS", str(paths["outputs"]))
    monkeypatch.setenv("RUNBOOK_PROGRESS", "off")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    return paths


@pytest.fixture
def small_source(runbook_env: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """``runbook_env`` with the small database written to its CHROMA_PERSIST_DIR."""
    return make_small_db(runbook_env["chroma"])


@pytest.fixture(params=["edge", "local"])
def qdrant_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An empty Qdrant target through ``open_target``: Qdrant Edge (the engine) and qdrant-client's local mode, so
    one test proves the same behaviour on both (where they differ, the engine's answer is the one Chroma's equals)."""
    from runbook_lib.config.settings import QdrantSettings
    from runbook_lib.qdrant.base import QdrantStore
    from runbook_lib.qdrant.connect import open_target

    if request.param == "edge":
        settings = QdrantSettings(edge_path=tmp_path / "qdrant_edge")
    else:
        settings = QdrantSettings(path=tmp_path / "qdrant_local")
    with open_target(settings) as store:
        assert isinstance(store, QdrantStore)
        yield store


def run_step_inprocess(step: str, fn: Any, **params: Any) -> Any:
    """Run a step's library function the way its notebook does, without a kernel (fast tests)."""
    from runbook_lib.kernel.step import begin

    s = begin(step, **params)
    return s, s.execute(fn)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real Chroma server (`chroma run` from the installed wheel) on a free loopback port."""
    exe = shutil.which("chroma", path=str(BIN)) or shutil.which("chroma")
    if exe is None:
        pytest.fail("the `chroma` command of the installed chromadb wheel is missing")
    data = tmp_path_factory.mktemp("chroma_server")
    port = free_port()
    log = (data / "server.log").open("w")
    proc = subprocess.Popen(
        [exe, "run", "--path", str(data / "db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ANONYMIZED_TELEMETRY": "False"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"chroma run did not start: {(data / 'server.log').read_text()[-2000:]}")
                time.sleep(0.3)
        yield {"host": "127.0.0.1", "port": port, "process": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def fill_server(host: str, port: int, *, database: str | None = None, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Write the small dataset into a Chroma server (into a fresh database so tests do not collide)."""
    admin = chromadb.AdminClient(
        chromadb.config.Settings(
            chroma_api_impl="chromadb.api.fastapi.FastAPI", chroma_server_host=host, chroma_server_http_port=port
        )
    )
    db = database or f"db_{os.urandom(4).hex()}"
    admin.create_database(db)
    client = chromadb.HttpClient(host=host, port=port, database=db)
    rng = np.random.default_rng(seed)
    spec: dict[str, dict[str, Any]] = {}
    for name, space, dim, n in [("srv_cosine", "cosine", 12, 250), ("srv_l2", "l2", 6, 90)]:
        col = client.create_collection(name, metadata={"hnsw:space": space}, embedding_function=None)
        ids = [f"s{i}" for i in range(n)]
        col.add(
            ids=ids,
            embeddings=rng.normal(size=(n, dim)).tolist(),
            documents=[f"server doc {i}" for i in range(n)],
            metadatas=[{"n": i, "ok": True} for i in range(n)],
        )
        spec[name] = {"space": space, "dim": dim, "count": n, "ids": ids}
    return {"database": db, "collections": spec}


@pytest.fixture
def server_env(
    chroma_server: dict[str, Any], runbook_env: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """``runbook_env`` whose source is the Chroma server, in a fresh database filled with test data."""
    filled = fill_server(chroma_server["host"], chroma_server["port"])
    monkeypatch.setenv("CHROMA_HOST", chroma_server["host"])
    monkeypatch.setenv("CHROMA_PORT", str(chroma_server["port"]))
    monkeypatch.setenv("CHROMA_DATABASE", filled["database"])
    return {**filled, **runbook_env}


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """The real `runbook` command in a subprocess (papermill, real kernel)."""
    return subprocess.run(
        [str(BIN / "runbook"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def target_kind(path: Path) -> str:
    """Which embedded target the folder is: local mode once it holds local mode's ``meta.json`` or when
    ``QDRANT_PATH`` names it, else Qdrant Edge (the engine, the default)."""
    if (path / "meta.json").is_file() or os.environ.get("QDRANT_PATH") == str(path):
        return "local"
    return "edge"


def open_qdrant(path: Path) -> Any:
    """The embedded target at ``path`` (Edge or local mode, :func:`target_kind`) through the runbook's own
    ``open_target``: a ``QdrantStore`` to use as a context manager (it holds the folder's lock until closed)."""
    from runbook_lib.config.settings import QdrantSettings
    from runbook_lib.qdrant.connect import open_target

    kind = target_kind(path)
    return open_target(QdrantSettings(edge_path=path) if kind == "edge" else QdrantSettings(path=path))


@contextmanager
def holding_qdrant(path: Path) -> Iterator[Any]:
    """Hold the embedded target at ``path`` as another process would (local mode's folder lock, Edge's lock on
    every shard there): the runbook's own opener is refused until the block ends. Yields the open store."""
    with open_qdrant(path) as store:
        for name in store.collection_names():
            store.count(name)  # Edge opens (and locks) a shard on first use
        yield store


def read_qdrant(path: Path, name: str) -> dict[str, Any]:
    """Every point of a collection in an embedded target (:func:`open_qdrant`): point id -> (vector, payload),
    its size and distance. Closes the target."""
    with open_qdrant(path) as target:
        points: dict[str, Any] = {}
        offset = None
        while True:
            records, offset = target.scroll(name, limit=500, offset=offset, with_payload=True, with_vectors=True)
            for r in records:
                points[str(r.id)] = (np.asarray(r.vector, dtype=np.float32), r.payload)
            if offset is None:
                break
        info = target.describe_collection(name)
        return {"points": points, "size": info.size, "distance": info.distance}


def assert_exact_copy(chroma_dir: Path, qdrant_path: Path, names: list[str] | None = None) -> int:
    """Assert Qdrant holds exactly the Chroma records: ids, vectors, documents, metadata (types too), uris."""
    from runbook_lib.chroma.source import ChromaSource
    from runbook_lib.config.settings import ChromaSettings
    from runbook_lib.core.mapping import CHROMA_TO_QDRANT_DISTANCE, normalise_rows, point_id

    checked = 0
    with ChromaSource.open(ChromaSettings(persist_dir=chroma_dir)) as src:
        for name in names or src.collection_names():
            ids = src.snapshot_ids(name)
            if not ids:
                continue
            batch = src.fetch(name, ids)
            target = read_qdrant(qdrant_path, name)
            space = src.space(name)
            assert target["distance"] == CHROMA_TO_QDRANT_DISTANCE[space], name
            assert target["size"] == batch.embeddings.shape[1], name
            assert len(target["points"]) == len(ids), name
            expected = normalise_rows(batch.embeddings) if space == "cosine" else batch.embeddings
            for k, cid in enumerate(ids):
                vec, payload = target["points"][point_id(cid)]
                assert payload["chroma_id"] == cid
                got = normalise_rows(vec[None, :])[0] if space == "cosine" else vec
                assert np.allclose(got, expected[k], atol=1e-6), (name, cid)
                assert payload["document"] == batch.documents[k], (name, cid)
                meta = batch.metadatas[k] or {}
                assert payload["metadata"] == meta, (name, cid)
                for key, value in meta.items():  # 1 is not 1.0 is not True
                    assert type(payload["metadata"][key]) is type(value), (name, cid, key)
                if batch.uris[k] is None:
                    assert "uri" not in payload, (name, cid)
                else:
                    assert payload["uri"] == batch.uris[k], (name, cid)
                assert set(payload) <= {"chroma_id", "document", "metadata", "uri"}
                checked += 1
    return checked


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback TCP server that accepts connections and never sends a byte (a hung Chroma server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1]
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    sock.close()

"""The source side leaves nothing behind and tells the truth: scratch copies of dead processes are removed
(RUNBOOK_SCRATCH_DIR), a damaged chroma.sqlite3 is one sentence and no backup folder, and reads from a Chroma server
survive transient failures (retried) while permanent ones fail at once. Real chromadb, a real `chroma run` server
behind a loopback proxy that misbehaves on purpose."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from tenacity import wait_none

from runbook_lib.chroma import files as chroma_files
from runbook_lib.chroma import scratch
from runbook_lib.chroma import server as chroma_server
from runbook_lib.chroma.backup import backup_root, create_backup
from runbook_lib.chroma.source import ChromaSource
from runbook_lib.config.settings import load_settings
from runbook_lib.core import retries
from runbook_lib.errors import ConfigError, SourceError
from runbook_lib.steps.migrate.engine import migrate

from conftest import run_cli, run_step_inprocess


# --- 1. scratch copies are never left behind ----------------------------------------------------------------------
@pytest.fixture
def scratch_root(runbook_env: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "scratch"
    monkeypatch.setenv("RUNBOOK_SCRATCH_DIR", str(root))
    return root


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid names no process any more
    return proc.pid


def _owned_folder(root: Path, name: str, pid: int, **extra: Any) -> Path:
    folder = root / name
    (folder / "chroma_db").mkdir(parents=True)
    (folder / "chroma_db" / "chroma.sqlite3").write_bytes(b"x" * 1024)
    owner = {"pid": pid, "host": socket.gethostname(), **extra}
    (folder / scratch.OWNER_FILE).write_text(json.dumps(owner))
    return folder


def test_stale_scratch_folders_of_dead_processes_are_removed(small_source: dict[str, Any], scratch_root: Path) -> None:
    dead = _dead_pid()
    stale = _owned_folder(scratch_root, "runbook-scratch-dead", dead)
    stale_kernel = _owned_folder(scratch_root, "runbook-kernel-dead", dead)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = _owned_folder(scratch_root, "runbook-scratch-live", sleeper.pid)
        reused = _owned_folder(scratch_root, "runbook-scratch-reused", sleeper.pid, start_ticks=1)  # pid reused
        unmarked_new = scratch_root / "runbook-scratch-unmarked-new"
        unmarked_new.mkdir()
        unmarked_old = scratch_root / "runbook-scratch-unmarked-old"
        unmarked_old.mkdir()
        two_days_ago = time.time() - 2 * 86400
        os.utime(unmarked_old, (two_days_ago, two_days_ago))
        unrelated = scratch_root / "someone-elses-folder"
        unrelated.mkdir()

        settings = load_settings()
        assert settings.scratch_dir == scratch_root and settings.public()["scratch_dir"] == str(scratch_root)
        with ChromaSource.open(settings.chroma) as source:
            assert source.scratch is not None and source.scratch.parent == scratch_root
            assert scratch.owner_of(source.scratch)["pid"] == os.getpid()  # type: ignore[index]
            assert source.count("alpha_docs") == 700
            mine = source.scratch
        assert not mine.exists()  # closed: its own copy is gone
        assert not stale.exists() and not stale_kernel.exists()  # owners dead: removed
        if Path(f"/proc/{sleeper.pid}/stat").exists():
            assert not reused.exists()  # the pid runs, but it is another process than the one that made it
        assert live.exists() and (live / "chroma_db" / "chroma.sqlite3").is_file()  # owner alive: kept
        assert unmarked_new.exists() and not unmarked_old.exists()
        assert unrelated.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_killed_run_leaves_a_scratch_copy_the_next_run_removes(
    small_source: dict[str, Any], scratch_root: Path
) -> None:
    code = (
        "import time\n"
        "from runbook_lib.config.settings import load_settings\n"
        "from runbook_lib.chroma.source import ChromaSource\n"
        "s = ChromaSource.open(load_settings().chroma)\n"
        "print(s.scratch, flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None
        left = Path(proc.stdout.readline().strip())
        assert left.parent == scratch_root and (left / "chroma_db" / "chroma.sqlite3").is_file()
        with ChromaSource.open(load_settings().chroma):
            assert left.exists()  # its owner still runs: never touched
        proc.kill()  # kill -9: no cleanup of its own
        proc.wait()
        assert left.exists()
        with ChromaSource.open(load_settings().chroma):
            assert not left.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert [p.name for p in scratch_root.iterdir()] == []


def test_no_room_for_the_scratch_copy_names_the_scratch_dir(
    small_source: dict[str, Any], scratch_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chroma_files, "tree_size", lambda root: 10**18)
    with pytest.raises(Exception, match="Not enough disk space for the scratch copy") as info:
        ChromaSource.open(load_settings().chroma)
    text = str(info.value)
    assert str(scratch_root) in text and "RUNBOOK_SCRATCH_DIR" in text and "\n" not in text
    assert not scratch_root.exists() or not any(scratch_root.iterdir())  # nothing was created


def test_scratch_dir_setting(tmp_path: Path) -> None:
    import tempfile

    assert load_settings({}).scratch_dir == Path(tempfile.gettempdir())
    assert load_settings({"RUNBOOK_SCRATCH_DIR": str(tmp_path / "s")}).scratch_dir == tmp_path / "s"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"RUNBOOK_SCRATCH_DIR points to .* which is a file"):
        load_settings({"RUNBOOK_SCRATCH_DIR": str(tmp_path / "file")})


# --- 2. a damaged chroma.sqlite3 is one sentence and leaves nothing ------------------------------------------------
@pytest.fixture
def damaged_source(small_source: dict[str, Any], runbook_env: dict[str, Path], scratch_root: Path) -> Path:
    db = runbook_env["chroma"] / "chroma.sqlite3"
    db.write_bytes(b"this is not a SQLite database, only garbage \x00\xff" * 200)
    return db


def _assert_damaged_sentence(text: str, db: Path) -> None:
    assert str(db) in text and "CHROMA_PERSIST_DIR" in text and "not a readable SQLite database" in text, text


def _assert_nothing_left(runbook_env: dict[str, Path], scratch_root: Path) -> None:
    root = backup_root(runbook_env["chroma"])
    assert not root.exists(), list(root.rglob("*"))
    assert not scratch_root.exists() or not [p for p in scratch_root.iterdir() if p.name.startswith("runbook-")]


def test_damaged_sqlite_is_one_sentence_from_the_source_and_the_backup(
    damaged_source: Path, runbook_env: dict[str, Path], scratch_root: Path
) -> None:
    with pytest.raises(SourceError) as info:
        ChromaSource.open(load_settings().chroma)
    _assert_damaged_sentence(str(info.value), damaged_source)
    assert "\n" not in str(info.value) and info.value.exit_code == 2
    with pytest.raises(SourceError) as info:
        create_backup(runbook_env["chroma"], "run-damaged")
    _assert_damaged_sentence(str(info.value), damaged_source)
    _assert_nothing_left(runbook_env, scratch_root)


def test_damaged_pages_past_the_header_fail_the_backup_and_leave_nothing(
    small_source: dict[str, Any], runbook_env: dict[str, Path], scratch_root: Path
) -> None:
    """A database whose header and schema read fine but whose later pages are garbage."""
    db = runbook_env["chroma"] / "chroma.sqlite3"
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    for offset in range(page * 4, len(data), page):
        data[offset : offset + page] = b"\xa5" * min(page, len(data) - offset)
    db.write_bytes(bytes(data))
    with pytest.raises(Exception) as info:
        create_backup(runbook_env["chroma"], "run-pages")
    assert str(db) in str(info.value) and "\n" not in str(info.value)
    _assert_nothing_left(runbook_env, scratch_root)


def test_damaged_sqlite_stops_migrate_in_process(
    damaged_source: Path, runbook_env: dict[str, Path], scratch_root: Path
) -> None:
    with pytest.raises(SourceError) as info:
        run_step_inprocess("migrate", migrate)
    _assert_damaged_sentence(str(info.value), damaged_source)
    _assert_nothing_left(runbook_env, scratch_root)


def test_damaged_sqlite_through_the_runner_is_exit_2_without_traceback(
    damaged_source: Path, runbook_env: dict[str, Path], scratch_root: Path
) -> None:
    done = run_cli("migrate")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "DatabaseError" not in done.stderr, done.stderr[-3000:]
    assert "not a readable SQLite database" in done.stderr and "CHROMA_PERSIST_DIR" in done.stderr
    _assert_nothing_left(runbook_env, scratch_root)


# --- 3. reads from a Chroma server are retried on transient errors only -------------------------------------------
class _Proxy(BaseHTTPRequestHandler):
    """Forwards to the real Chroma server, except that requests whose path ends with ``fail_suffix`` fail
    ``fail_times`` times first: ``mode`` 503 (plain-text body), ``reset`` (connection closed, no answer) or 400."""

    upstream = ""
    fail_suffix = "/get"
    fail_times = 0
    mode = "503"
    hits: list[str] = []  # noqa: RUF012
    lock = threading.Lock()

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        cls = type(self)
        with cls.lock:
            cls.hits.append(self.path)
            fail = self.path.endswith(cls.fail_suffix) and cls.fail_times > 0
            if fail:
                cls.fail_times -= 1
        if fail and cls.mode == "reset":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fail:
            status, data, ctype = (
                (503, b"upstream busy", "text/plain")
                if cls.mode == "503"
                else (400, b'{"error":"InvalidArgumentError","message":"stub refuses"}', "application/json")
            )
        else:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
            answer = httpx.request(self.command, cls.upstream + self.path, content=body, headers=headers, timeout=30)
            status, data, ctype = answer.status_code, answer.content, answer.headers.get("content-type", "")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _handle

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def proxy(server_env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, type[_Proxy]]]:
    monkeypatch.setattr(retries, "PATIENT", retries.Budget(retries.PATIENT.attempts, wait_none()))
    upstream = f"http://{os.environ['CHROMA_HOST']}:{os.environ['CHROMA_PORT']}"
    handler = type("Proxy", (_Proxy,), {"upstream": upstream, "hits": [], "lock": threading.Lock()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = str(server.server_address[1])
    settings = load_settings(
        {"CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": port, "CHROMA_DATABASE": server_env["database"]}
    )
    try:
        yield settings.chroma, handler
    finally:
        server.shutdown()
        server.server_close()


def _gets(handler: type[_Proxy]) -> int:
    return sum(1 for p in handler.hits if p.endswith("/get"))


@pytest.mark.parametrize("mode", ["503", "reset"])
def test_transient_server_errors_are_retried(proxy: tuple[Any, type[_Proxy]], mode: str) -> None:
    settings, handler = proxy
    with ChromaSource.open(settings) as source:
        handler.mode, handler.fail_times = mode, 2
        before = _gets(handler)
        ids = source.snapshot_ids("srv_cosine")  # fails twice, then answers
        assert len(ids) == 250 and _gets(handler) - before == 3
        handler.fail_times = 2
        batch = source.fetch("srv_cosine", ids)
        assert batch.ids == ids and batch.embeddings.shape == (250, 12)


def test_a_server_that_stays_down_fails_after_the_bounded_attempts(proxy: tuple[Any, type[_Proxy]]) -> None:
    settings, handler = proxy
    with ChromaSource.open(settings) as source:
        handler.mode, handler.fail_times = "503", 1000
        before = _gets(handler)
        with pytest.raises(chroma_server.ChromaServerBusy, match="503"):
            source.snapshot_ids("srv_l2")
        assert _gets(handler) - before == retries.PATIENT.attempts


def test_permanent_server_errors_are_not_retried(proxy: tuple[Any, type[_Proxy]]) -> None:
    from chromadb.errors import InvalidArgumentError

    settings, handler = proxy
    with ChromaSource.open(settings) as source:
        handler.mode, handler.fail_times = "400", 5
        before = _gets(handler)
        with pytest.raises(InvalidArgumentError, match="stub refuses"):
            source.snapshot_ids("srv_l2")
        assert _gets(handler) - before == 1


def test_transient_classification() -> None:
    from chromadb.errors import InternalError, InvalidArgumentError, NotFoundError, RateLimitError

    request = httpx.Request("GET", "http://127.0.0.1/x")
    transient = [
        httpx.ConnectError("refused", request=request),
        httpx.ReadTimeout("slow", request=request),
        httpx.RemoteProtocolError("reset", request=request),
        httpx.HTTPStatusError("busy", request=request, response=httpx.Response(502, request=request)),
        chroma_server.ChromaServerBusy(503, "/x", "busy"),
        ConnectionResetError("reset"),
        InternalError("boom"),
        RateLimitError("slow down"),
    ]
    permanent = [
        httpx.HTTPStatusError("no", request=request, response=httpx.Response(404, request=request)),
        NotFoundError("no such collection"),
        InvalidArgumentError("bad"),
        ValueError("bad"),
    ]
    assert all(chroma_server.is_transient(e) for e in transient)
    assert not any(chroma_server.is_transient(e) for e in permanent)

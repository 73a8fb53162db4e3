"""A loopback stand-in of Chroma Cloud's quotas, in front of a real ``chroma run`` server (tests and benchmarks).

It speaks for Cloud where the runbook would notice the difference:

* the API key in Cloud's header (``X-Chroma-Token``, the one chromadb's ``CloudClient`` sends) on every request
  but the heartbeat and version; a wrong or missing key is answered 401 (and counted as rejected);
* at most :data:`MAX_RECORDS` records per request: a ``get`` with more ids, or without a ``limit`` (it would return
  the whole collection) or with a larger one, a ``query`` with a larger ``n_results``, and an ``add``/``upsert``/
  ``update``/``delete`` of more ids are answered 422 (counted as rejected, never forwarded);
* the key's identity (``/api/v2/auth/identity``) as Cloud gives it for a key to every database of its tenant
  (``databases: ["*"]``), so chromadb's ``CloudClient`` keeps the database it is given;
* at most :data:`MAX_CONCURRENT_READS` reads in flight per collection: one more is answered 429 with
  ``Retry-After``; and a read is also answered 429 at random (``throttle_rate``), as a busy Cloud does.

Everything else is forwarded to the server with the server's own token (``Authorization: Bearer``) in place of the
key. :attr:`CloudQuotaProxy.stats` counts what it saw, for the tests' proof.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx

#: Chroma Cloud's quotas (its "Quotas & Limits" page): records per read or write, concurrent reads per collection.
MAX_RECORDS = 300
MAX_CONCURRENT_READS = 10
#: Requests that do not need the key (chromadb's client sends none before it is created).
OPEN_PATHS = ("/api/v2/heartbeat", "/api/v2/version", "/api/v1/heartbeat")
READS = {"get", "query", "count", "search"}
WRITES = {"add", "upsert", "update", "delete"}


@dataclass
class ProxyStats:
    requests: int = 0
    forwarded: int = 0
    reads: int = 0
    writes: int = 0
    #: Requests refused for breaking a quota (too many records) or a bad key: the runbook must cause none.
    rejected: int = 0
    rejected_reasons: Counter[str] = field(default_factory=Counter)
    #: 429 answers: above the concurrency quota, and at random.
    throttled_concurrency: int = 0
    throttled_random: int = 0
    max_reads_in_flight: int = 0
    largest_request: int = 0
    records_returned: int = 0

    @property
    def throttled(self) -> int:
        return self.throttled_concurrency + self.throttled_random

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "forwarded": self.forwarded,
            "reads": self.reads,
            "writes": self.writes,
            "rejected": self.rejected,
            "rejected_reasons": dict(self.rejected_reasons),
            "throttled_concurrency": self.throttled_concurrency,
            "throttled_random": self.throttled_random,
            "max_reads_in_flight": self.max_reads_in_flight,
            "largest_request": self.largest_request,
            "records_returned": self.records_returned,
        }


def _operation(path: str) -> tuple[str | None, str | None]:
    """(collection id, operation) of a Chroma v2 record request, e.g. ``.../collections/<id>/get``."""
    parts = path.split("?")[0].rstrip("/").split("/")
    if "collections" in parts:
        i = parts.index("collections")
        if len(parts) == i + 3:
            return parts[i + 1], parts[i + 2]
    return None, None


class CloudQuotaProxy:
    """Listens on ``127.0.0.1:<port>`` and forwards to ``upstream`` (``http://host:port``) within Cloud's quotas.
    Use as a context manager, or :meth:`start` / :meth:`stop`."""

    def __init__(
        self,
        upstream: str,
        api_key: str,
        *,
        server_token: str | None = None,
        throttle_rate: float = 0.03,
        retry_after: str = "1",
        max_records: int = MAX_RECORDS,
        max_concurrent_reads: int = MAX_CONCURRENT_READS,
        latency_s: float = 0.0,
        seed: int = 0,
        tenant: str = "default_tenant",
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.api_key = api_key
        self.server_token = server_token
        self.throttle_rate = throttle_rate
        self.retry_after = retry_after
        self.max_records = max_records
        self.max_concurrent_reads = max_concurrent_reads
        self.latency_s = latency_s
        self.tenant = tenant
        self.stats = ProxyStats()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()
        self._http = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> CloudQuotaProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="cloud-quota-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._http.close()

    def __enter__(self) -> CloudQuotaProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset(self) -> None:
        with self._lock:
            self.stats = ProxyStats()

    # --- the rules ---------------------------------------------------------------------------------------------
    def _too_many(self, operation: str, body: dict[str, Any]) -> str | None:
        ids = body.get("ids")
        n_ids = len(ids) if isinstance(ids, list) else 0
        if operation == "get":
            limit = body.get("limit")
            if ids is None and limit is None:
                return "get without a limit"
            if limit is not None and int(limit) > self.max_records:
                return f"get with limit {limit}"
            if n_ids > self.max_records:
                return f"get of {n_ids} ids"
            return None
        if operation == "query":
            n = int(body.get("n_results") or 10)
            return f"query with n_results {n}" if n > self.max_records else None
        if operation in WRITES and n_ids > self.max_records:
            return f"{operation} of {n_ids} records"
        return None

    def _size(self, operation: str | None, body: dict[str, Any]) -> int:
        ids = body.get("ids")
        if isinstance(ids, list):
            return len(ids)
        if operation == "get":
            return int(body.get("limit") or 0)
        return 0

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                path = self.path.split("?")[0]
                with proxy._lock:
                    proxy.stats.requests += 1
                if not path.startswith(OPEN_PATHS) and self.headers.get("x-chroma-token") != proxy.api_key:
                    with proxy._lock:
                        proxy.stats.rejected += 1
                        proxy.stats.rejected_reasons["no or wrong API key"] += 1
                    self._answer(401, {"error": "Unauthorized", "message": "missing or invalid x-chroma-token"})
                    return
                if path == "/api/v2/auth/identity":
                    self._answer(200, {"user_id": "cloud-user", "tenant": proxy.tenant, "databases": ["*"]})
                    return
                collection, operation = _operation(path)
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {}
                body = body if isinstance(body, dict) else {}
                is_read = operation in READS
                if operation is not None:
                    problem = proxy._too_many(operation, body)
                    if problem is not None:
                        with proxy._lock:
                            proxy.stats.rejected += 1
                            proxy.stats.rejected_reasons[problem] += 1
                        self._answer(
                            422,
                            {"error": "InvalidArgumentError", "message": f"Quota exceeded: {problem} (max 300)"},
                        )
                        return
                    with proxy._lock:
                        proxy.stats.largest_request = max(proxy.stats.largest_request, proxy._size(operation, body))
                        proxy.stats.reads += is_read
                        proxy.stats.writes += operation in WRITES
                counted = False
                if is_read and collection is not None:
                    with proxy._lock:
                        if proxy._in_flight[collection] >= proxy.max_concurrent_reads:
                            proxy.stats.throttled_concurrency += 1
                            throttle = "concurrency"
                        elif proxy._random.random() < proxy.throttle_rate:
                            proxy.stats.throttled_random += 1
                            throttle = "random"
                        else:
                            throttle = ""
                            proxy._in_flight[collection] += 1
                            counted = True
                            proxy.stats.max_reads_in_flight = max(
                                proxy.stats.max_reads_in_flight, proxy._in_flight[collection]
                            )
                    if throttle:
                        self._answer(
                            429,
                            {"error": "RateLimitError", "message": f"Too many requests ({throttle})"},
                            {"retry-after": proxy.retry_after},
                        )
                        return
                try:
                    if proxy.latency_s:
                        time.sleep(proxy.latency_s)
                    headers = {
                        k: v
                        for k, v in self.headers.items()
                        if k.lower() not in ("host", "content-length", "x-chroma-token", "connection")
                    }
                    if proxy.server_token:
                        headers["authorization"] = f"Bearer {proxy.server_token}"
                    response = proxy._http.request(
                        self.command, proxy.upstream + self.path, content=raw or None, headers=headers
                    )
                finally:
                    if counted:
                        with proxy._lock:
                            proxy._in_flight[collection or ""] -= 1
                with proxy._lock:
                    proxy.stats.forwarded += 1
                    if operation == "get" and response.status_code == 200:
                        with contextlib.suppress(ValueError):
                            proxy.stats.records_returned += len(response.json().get("ids") or [])
                data = response.content
                self.send_response(response.status_code)
                for k, v in response.headers.items():
                    if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(k, v)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle()

            def do_POST(self) -> None:
                self._handle()

            def do_PUT(self) -> None:
                self._handle()

            def do_DELETE(self) -> None:
                self._handle()

            def do_PATCH(self) -> None:
                self._handle()

        return Handler

"""Chroma Cloud as a source: every read within Cloud's quotas, and a snapshot Cloud does not offer, made by paging.

Cloud's quotas (its "Quotas & Limits" page): at most :data:`MAX_RECORDS_PER_REQUEST` records per request (a ``get``
by ids or with a ``limit``, a write), at most :data:`MAX_CONCURRENT_READS` reads in flight per collection, and
throttling (429, or 503) beyond. This reader keeps to them:

* every request carries at most 300 records: pages of ``get(limit=300, offset=...)``, ``get(ids=<=300)``;
* at most ``read_concurrency`` reads in flight per collection (the steps' parameter; 4 by default, 10 at most),
  held by one semaphore per collection that every read of it takes, so pages, fetches and counts together stay
  within it; pages are read concurrently up to it, for a read rate close to what the quotas allow;
* a throttled answer is retried by the one retry policy (:mod:`runbook_lib.core.retries`), which waits the answer's
  ``Retry-After`` plus jitter (exponential backoff with jitter without one); every attempt and retry is counted.

**The snapshot.** Cloud has no snapshot, and ``get(include=[])`` of a whole collection (a server's id snapshot) is
over its quota. The first call that needs a collection's ids pages the whole collection, in Cloud's stable order
(offsets), with its records, into a spool (an SQLite file in a scratch folder, removed on close; memory follows the
pages in flight, disk the collections read). Then a catch-up pass pages it again and compares every record with the
spool (a digest of its exact float32 vector, document, metadata with types and uri): a record new or changed is
taken, one the pass did not see is looked up by id (gone: dropped; moved between pages by a concurrent write:
re-read), until a pass finds nothing new (at most :data:`MAX_PASSES`). Every id, record, count and metadata type a
step asks for is then answered from that spool, so the copy, the ledger's fingerprints, the verification and a
sync's plan all see one state of the collection: the one the last pass found unchanged.
:meth:`CloudSource.read_summary` says how the source was read (passes, requests, throttled answers retried) for the
step's result.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from chromadb.api import ClientAPI

from runbook_lib.chroma import scratch
from runbook_lib.chroma.base import RecordBatch
from runbook_lib.chroma.clients import open_admin_client, open_client
from runbook_lib.chroma.server import is_throttled, read_with_retry
from runbook_lib.chroma.source import INCLUDE_ALL, ChromaSource, assemble
from runbook_lib.config.settings import ChromaSettings
from runbook_lib.core.payload_indexes import add_key_types
from runbook_lib.errors import SourceError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Chroma Cloud's quotas: records per request (read or write), reads in flight per collection.
MAX_RECORDS_PER_REQUEST = 300
MAX_CONCURRENT_READS = 10
#: Paging passes per collection at most: the first, then catch-up passes until one finds nothing new.
MAX_PASSES = 5


@dataclass
class ReadStats:
    """What the reader asked of Cloud: attempts (every HTTP read, retries included), throttled answers, retries."""

    requests: int = 0
    throttled: int = 0
    retries: int = 0
    records_paged: int = 0
    seconds: float = 0.0
    #: collection -> passes its snapshot took, and whether the last one found nothing new.
    passes: dict[str, int] = field(default_factory=dict)
    settled: dict[str, bool] = field(default_factory=dict)
    #: collection -> {"records", "requests", "seconds"} of its snapshot (what the dry run measures and reports).
    collections: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "throttled": self.throttled,
            "retries": self.retries,
            "records_paged": self.records_paged,
            "seconds": round(self.seconds, 2),
            "passes": dict(self.passes),
            "settled": dict(self.settled),
            "collections": {k: dict(v) for k, v in self.collections.items()},
        }


def record_digest(embedding: Any, document: Any, metadata: Any, uri: Any) -> bytes:
    """What identifies a record's content: its exact float32 vector, document, metadata (with types) and uri."""
    vector = np.asarray(embedding, dtype=np.float32).tobytes() if embedding is not None else b""
    meta = sorted((metadata or {}).items())
    return hashlib.blake2b(vector + pickle.dumps((document, meta, uri), protocol=4), digest_size=16).digest()


def request_count(count: int, concurrency: int = 1, passes: int = 2) -> int:
    """Requests to snapshot a collection of ``count`` records when nothing changes: per pass (the first, and one
    catch-up pass that finds nothing new) a count and the pages, plus, when the last page is full, the
    ``concurrency`` pages read to find the end."""
    pages = max(1, -(-count // MAX_RECORDS_PER_REQUEST))
    full_last = count > 0 and count % MAX_RECORDS_PER_REQUEST == 0
    return passes * (1 + pages + (concurrency if full_last else 0))


class _Spool:
    """The records of the collections paged so far, in an SQLite file (one writer at a time, any thread)."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rec (coll TEXT, id TEXT, digest BLOB, dim INTEGER, emb BLOB, doc TEXT, "
            "meta BLOB, uri TEXT, PRIMARY KEY (coll, id))"
        )
        self._lock = threading.Lock()

    def digests(self, coll: str) -> dict[str, bytes]:
        with self._lock:
            return dict(self._db.execute("SELECT id, digest FROM rec WHERE coll = ?", (coll,)).fetchall())

    def put(self, coll: str, rows: list[tuple[str, bytes, Any, Any, Any, Any]]) -> None:
        values = []
        for rid, digest, emb, doc, meta, uri in rows:
            vector = None if emb is None else np.asarray(emb, dtype=np.float32)
            values.append(
                (
                    coll,
                    rid,
                    digest,
                    -1 if vector is None else int(vector.shape[0]),
                    None if vector is None else vector.tobytes(),
                    doc,
                    pickle.dumps(meta, protocol=4),
                    uri,
                )
            )
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO rec VALUES (?, ?, ?, ?, ?, ?, ?, ?)", values)
            self._db.execute("COMMIT")

    def delete(self, coll: str, ids: Sequence[str]) -> None:
        with self._lock:
            self._db.executemany("DELETE FROM rec WHERE coll = ? AND id = ?", [(coll, i) for i in ids])

    def drop(self, coll: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM rec WHERE coll = ?", (coll,))

    def ids(self, coll: str) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT id FROM rec WHERE coll = ? ORDER BY id", (coll,))]

    def get(self, coll: str, ids: Sequence[str]) -> dict[str, Any]:
        """chromadb's ``get`` answer for those of ``ids`` the spool holds (in the spool's order)."""
        rows: list[tuple[Any, ...]] = []
        with self._lock:
            for start in range(0, len(ids), 900):
                chunk = list(ids[start : start + 900])
                marks = ",".join("?" * len(chunk))
                rows.extend(
                    self._db.execute(
                        f"SELECT id, dim, emb, doc, meta, uri FROM rec WHERE coll = ? AND id IN ({marks})",
                        (coll, *chunk),
                    ).fetchall()
                )
        return {
            "ids": [r[0] for r in rows],
            "embeddings": [None if r[1] < 0 else np.frombuffer(r[2], dtype=np.float32) for r in rows],
            "documents": [r[3] for r in rows],
            "metadatas": [pickle.loads(r[4]) for r in rows],
            "uris": [r[5] for r in rows],
        }

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CloudSource(ChromaSource):
    """Chroma Cloud, read within its quotas (:class:`~runbook_lib.chroma.base.ChromaReader`); use as a context
    manager so the spool is removed."""

    def __init__(self, client: ClientAPI, settings: ChromaSettings) -> None:
        super().__init__(client, settings, None)
        self.stats = ReadStats()
        self.concurrency = max(1, min(int(settings.read_concurrency), MAX_CONCURRENT_READS))
        self._limits: dict[str, threading.Semaphore] = {}
        self._limits_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._spooled: set[str] = set()
        self._spool_dir: Path | None = None
        self._spool: _Spool | None = None
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="chroma-cloud-read")

    @classmethod
    def open(cls, settings: ChromaSettings, *, copy_from: Path | None = None) -> CloudSource:
        """Open Chroma Cloud (``copy_from`` does not apply: Cloud keeps no files here)."""
        return cls(open_client(settings), settings)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._collections.clear()
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        if self._spool_dir is not None:
            scratch.remove_scratch(self._spool_dir)
            self._spool_dir = None
        self._spooled.clear()
        from runbook_lib.chroma.clients import close_client

        close_client(self.client)

    def release(self) -> None:
        """Forget the collection handles; the spooled snapshots stay until :meth:`close` (on disk, like a
        directory's scratch copy), so a step that plans every collection first and copies them after reads each
        collection once, and every step sees one state of it."""
        self._collections.clear()

    # --- what the run and the steps are told ----------------------------------------------------------------
    def read_summary(self) -> str:
        s = self.stats
        names = sorted(s.passes)
        unsettled = [n for n in names if not s.settled.get(n, True)]
        passes = ", ".join(f"{n}: {s.passes[n]}" for n in names) or "none"
        text = (
            f"Chroma Cloud was read within its quotas: at most {MAX_RECORDS_PER_REQUEST} records per request and "
            f"{self.concurrency} reads in flight per collection; {s.requests:,} requests "
            f"({s.throttled:,} throttled answers, {s.retries:,} retries, honouring Retry-After) in {s.seconds:.1f} s. "
            "Cloud has no snapshot: each collection was paged in Cloud's order, then paged again until a pass found "
            f"nothing new, and every read of it was answered from that state (passes: {passes})."
        )
        if unsettled:
            text += (
                f" Still changing after {MAX_PASSES} passes: {', '.join(unsettled)} (the copy is the last pass's "
                "state; stop the app's writes, or run `runbook sync` to carry what changed since)."
            )
        return text

    def quotas(self) -> dict[str, Any]:
        """Cloud's quotas as this reader keeps them, and what reading each collection read so far takes: the
        requests and seconds this reader measured (its snapshot: the first pass and the catch-up pass), and the
        requests a step reading it again needs when nothing changes (for the dry run's plan)."""
        per = {
            name: {
                **c,
                "expected_requests": request_count(int(c["records"]), self.concurrency),
                "expected_s": round(float(c["seconds"]), 1),
            }
            for name, c in self.stats.collections.items()
        }
        return {
            "source": "Chroma Cloud",
            "max_records_per_request": MAX_RECORDS_PER_REQUEST,
            "max_concurrent_reads_per_collection": MAX_CONCURRENT_READS,
            "read_concurrency": self.concurrency,
            "max_passes": MAX_PASSES,
            "requests": self.stats.requests,
            "throttled": self.stats.throttled,
            "retries": self.stats.retries,
            "seconds": round(self.stats.seconds, 1),
            "expected_requests": sum(c["expected_requests"] for c in per.values()),
            "expected_s": round(sum(c["expected_s"] for c in per.values()), 1),
            "collections": per,
        }

    # --- requests -----------------------------------------------------------------------------------------------
    def _limit(self, name: str) -> threading.Semaphore:
        with self._limits_lock:
            if name not in self._limits:
                self._limits[name] = threading.BoundedSemaphore(self.concurrency)
            return self._limits[name]

    def _read(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """One read of collection ``name``: within its concurrency, retried (Retry-After honoured), counted."""
        limit = self._limit(name)
        tries = 0

        def attempt() -> T:
            nonlocal tries
            tries += 1
            with self._stats_lock:
                self.stats.requests += 1
                self.stats.retries += tries > 1
            with limit:  # held for the request only, never during a back-off
                try:
                    return fn(*args, **kwargs)
                except BaseException as exc:
                    if is_throttled(exc):
                        with self._stats_lock:
                            self.stats.throttled += 1
                    raise

        return read_with_retry(attempt)

    def _get_by_ids(self, name: str, ids: Sequence[str], include: list[str]) -> list[dict[str, Any]]:
        """``get(ids=<=300)`` per chunk, up to ``read_concurrency`` in flight, answers in order."""
        col = self.collection(name)
        chunks = [list(ids[s : s + MAX_RECORDS_PER_REQUEST]) for s in range(0, len(ids), MAX_RECORDS_PER_REQUEST)]
        if len(chunks) <= 1:
            return [self._read(name, col.get, ids=c, include=include) for c in chunks]
        return list(self._pool.map(lambda c: self._read(name, col.get, ids=c, include=include), chunks))

    def collection_names(self) -> list[str]:
        found = read_with_retry(self.client.list_collections)
        return sorted(c if isinstance(c, str) else c.name for c in found)

    def count(self, name: str) -> int:
        if name in self._spooled and self._spool is not None:
            return len(self._spool.ids(name))
        return int(self._read(name, self.collection(name).count))

    def dimension(self, name: str) -> int | None:
        if name in self._spooled:
            first = self._store().get(name, self._store().ids(name)[:1])
        else:
            first = self._read(name, self.collection(name).get, limit=1, include=["embeddings"])
        embeddings = first.get("embeddings")
        if embeddings is None or len(embeddings) == 0:
            return None
        return len(embeddings[0])

    def search(self, name: str, vector: Sequence[float], k: int, where: Any) -> list[str]:
        if k > MAX_RECORDS_PER_REQUEST:
            raise SourceError(f"Chroma Cloud answers at most {MAX_RECORDS_PER_REQUEST} results per query, not k={k}.")
        return super().search(name, vector, k, where)

    def query_ids(self, name: str, queries: np.ndarray, k: int) -> list[list[str]] | str:
        if k > MAX_RECORDS_PER_REQUEST:
            return f"unavailable: Chroma Cloud answers at most {MAX_RECORDS_PER_REQUEST} results per query"
        try:
            res = self._read(name, self.collection(name).query, query_embeddings=queries, n_results=k, include=[])
            return [list(r) for r in res["ids"]]
        except Exception as exc:  # information only
            return f"unavailable: {str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"

    def other_databases(self) -> list[dict[str, Any]]:
        """The tenant's other databases (Cloud lists those the key may read)."""
        tenant = self.settings.tenant or getattr(self.client, "tenant", None) or "default_tenant"
        current = self.settings.database or getattr(self.client, "database", None)
        found: list[dict[str, Any]] = []
        try:
            admin = open_admin_client(self.settings)
            for db in read_with_retry(admin.list_databases, tenant=tenant):
                if db["name"] != current:
                    found.append({"tenant": tenant, "database": db["name"], "collections": None})
        except Exception as exc:  # a key scoped to one database may not list the others
            log.info("could not list the databases of tenant %s on Chroma Cloud: %s", tenant, exc)
        return found

    # --- the snapshot -------------------------------------------------------------------------------------------
    def _store(self) -> _Spool:
        if self._spool is None:
            self._spool_dir = scratch.make_scratch(self.settings.scratch_root())
            self._spool = _Spool(self._spool_dir / "cloud_spool.sqlite3")
        return self._spool

    def snapshot_ids(self, name: str) -> list[str]:
        """Every id of the collection, sorted, as of the snapshot this reader made of it (paged until settled)."""
        self._snapshot(name)
        return self._store().ids(name)

    def fetch(self, name: str, ids: Sequence[str], *, expected_dim: int | None = None) -> RecordBatch:
        """Records for ``ids`` from the snapshot of the collection (made on first use)."""
        self._snapshot(name)
        return assemble(name, ids, [self._store().get(name, ids)], expected_dim)

    def present_ids(self, name: str, ids: Sequence[str]) -> set[str]:
        self._snapshot(name)
        return set(self._store().get(name, ids)["ids"])

    def metadata_types(self, name: str, ids: Sequence[str], batch_size: int) -> tuple[dict[str, set[str]], int]:
        self._snapshot(name)
        key_types: dict[str, set[str]] = {}
        documents = 0
        step = max(1, batch_size * 4)
        for start in range(0, len(ids), step):
            part = self._store().get(name, ids[start : start + step])
            add_key_types(key_types, part.get("metadatas") or [])
            documents += sum(d is not None for d in part.get("documents") or [])
        return key_types, documents

    def iter_batches(
        self, name: str, batch_size: int, *, ids: Sequence[str] | None = None, expected_dim: int | None = None
    ) -> Iterator[RecordBatch]:
        all_ids = self.snapshot_ids(name) if ids is None else list(ids)
        for start in range(0, len(all_ids), batch_size):
            yield self.fetch(name, all_ids[start : start + batch_size], expected_dim=expected_dim)

    def _snapshot(self, name: str) -> None:
        if name in self._spooled:
            return
        t0 = time.perf_counter()
        requests_before = self.stats.requests
        spool = self._store()
        spool.drop(name)
        passes, settled = 0, False
        while passes < MAX_PASSES:
            passes += 1
            changes = self._pass(name, spool, first=passes == 1)
            log.info("Chroma Cloud: %s pass %d: %d record(s) new, changed or gone", name, passes, changes)
            if passes > 1 and changes == 0:
                settled = True
                break
        self._spooled.add(name)
        with self._stats_lock:
            self.stats.passes[name] = passes
            self.stats.settled[name] = settled
            seconds = time.perf_counter() - t0
            self.stats.seconds += seconds
            self.stats.collections[name] = {
                "records": len(spool.ids(name)),
                "requests": self.stats.requests - requests_before,
                "seconds": round(seconds, 3),
            }

    def _pass(self, name: str, spool: _Spool, *, first: bool) -> int:
        """One paging pass over the collection into ``spool``; how many records were new, changed or gone."""
        col = self.collection(name)
        known = {} if first else spool.digests(name)
        seen: set[str] = set()
        changes = 0
        expected = int(self._read(name, col.count))
        bar = _bar(expected, f"read {name} (pass {1 if first else 'catch-up'})")

        def page(offset: int) -> dict[str, Any]:
            return self._read(name, col.get, limit=MAX_RECORDS_PER_REQUEST, offset=offset, include=INCLUDE_ALL)

        def take(answer: dict[str, Any]) -> int:
            rows = []
            for rid, emb, doc, meta, uri in _records(answer):
                seen.add(rid)
                digest = record_digest(emb, doc, meta, uri)
                if known.get(rid) != digest:
                    rows.append((rid, digest, emb, doc, meta, uri))
                    known[rid] = digest
            if rows:
                spool.put(name, rows)
            with self._stats_lock:
                self.stats.records_paged += len(answer["ids"])
            bar.update(len(answer["ids"]))
            return len(rows)

        def pages(offsets: list[int]) -> bool:
            """Read these pages, ``read_concurrency`` in flight, each taken as it comes (memory: the pages in
            flight); True when the last one was full (the collection may go on)."""
            nonlocal changes
            last_full = False
            pending: dict[Future[dict[str, Any]], int] = {}
            todo = iter(offsets)
            while True:
                for off in todo:
                    pending[self._pool.submit(page, off)] = off
                    if len(pending) >= self.concurrency:
                        break
                if not pending:
                    return last_full
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    off = pending.pop(future)
                    answer = future.result()
                    changes += take(answer)
                    if off == offsets[-1]:
                        last_full = len(answer["ids"]) == MAX_RECORDS_PER_REQUEST

        try:
            planned = max(1, -(-expected // MAX_RECORDS_PER_REQUEST)) * MAX_RECORDS_PER_REQUEST
            more = pages(list(range(0, planned, MAX_RECORDS_PER_REQUEST)))  # the pages the count announced
            offset = planned
            while more:  # the collection grew since the count: as many pages more at a time, until a short one
                stop = offset + self.concurrency * MAX_RECORDS_PER_REQUEST
                more = pages(list(range(offset, stop, MAX_RECORDS_PER_REQUEST)))
                offset = stop
            if not first:
                unseen = sorted(set(known) - seen)
                if unseen:  # gone, or moved between pages by a concurrent write: asked by id
                    parts = self._get_by_ids(name, unseen, INCLUDE_ALL)
                    present: set[str] = set()
                    for part in parts:
                        present.update(part["ids"])
                        changes += take(part)
                    gone = [i for i in unseen if i not in present]
                    spool.delete(name, gone)
                    changes += len(gone)
        finally:
            bar.close()
        return changes


def _records(answer: dict[str, Any]) -> Iterator[tuple[str, Any, Any, Any, Any]]:
    n = len(answer["ids"])
    none = [None] * n

    def column(key: str) -> list[Any]:
        values = answer.get(key)
        return list(values) if values is not None else none

    yield from zip(
        answer["ids"], column("embeddings"), column("documents"), column("metadatas"), column("uris"), strict=True
    )


class _NoBar:
    def update(self, n: int) -> None:
        return None

    def close(self) -> None:
        return None


def _bar(total: int, desc: str) -> Any:
    """A tqdm bar for a paging pass (silent under the runner and with RUNBOOK_PROGRESS=off)."""
    if os.environ.get("RUNBOOK_HEADLESS", "").lower() in ("1", "true", "yes") or os.environ.get(
        "RUNBOOK_PROGRESS", ""
    ).lower() in ("0", "false", "off"):
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="rec", leave=False)

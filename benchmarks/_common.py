"""Helpers shared by the benchmarks: the cached sample ChromaDB, environment overrides, memory readings.

Nothing here is timed; the benchmarks time their own sections.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

#: Sample databases are cached here, one folder per (scale, seed, dim); delete the folder to rebuild.
CACHE_ROOT = Path(tempfile.gettempdir()) / "runbook-bench-cache"

T = TypeVar("T")


def sample_db(scale: float, seed: int, dim: int, *, progress: bool = False) -> tuple[Path, float]:
    """The cached sample ChromaDB for ``(scale, seed, dim)``: ``(path, seconds spent creating it now)``.

    ``create_sample_db`` builds under a temporary name and renames into place when complete, so a
    half-built cache entry never exists. Treat the cached directory as read-only: copy it before
    pointing ``CHROMA_PERSIST_DIR`` at it (the migration writes its backup next to the source).
    """
    from runbook_fixtures.sample_data import create_sample_db

    path = CACHE_ROOT / f"chroma-scale{scale:g}-seed{seed}-dim{dim}"
    if path.is_dir() and any(path.iterdir()):
        return path, 0.0
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    create_sample_db(path, seed=seed, scale=scale, dim=dim, progress=progress)
    return path, time.perf_counter() - started


def copy_tree(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


@contextmanager
def env(**values: str | None) -> Iterator[None]:
    """Set (or, with ``None``, unset) environment variables for the block, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


#: Variables that would point the library at a server instead of the temp directories.
SERVER_VARIABLES = ("CHROMA_HOST", "CHROMA_PORT", "CHROMA_SSL", "QDRANT_URL", "QDRANT_API_KEY")


def local_env(persist_dir: Path, qdrant_path: Path, outputs: Path) -> dict[str, str | None]:
    values: dict[str, str | None] = {k: None for k in SERVER_VARIABLES}
    values.update(
        CHROMA_PERSIST_DIR=str(persist_dir),
        QDRANT_PATH=str(qdrant_path),
        RUNBOOK_OUTPUTS=str(outputs),
        RUNBOOK_PROGRESS="off",
        MPLBACKEND="Agg",
    )
    return values


def open_source(persist_dir: Path) -> Any:
    """A :class:`ChromaSource` reading a scratch copy of ``persist_dir`` (the directory is never opened)."""
    from runbook_lib.chroma.source import ChromaSource
    from runbook_lib.config.settings import load_settings

    with env(**{k: None for k in SERVER_VARIABLES}, CHROMA_PERSIST_DIR=str(persist_dir)):
        settings = load_settings()
    return ChromaSource.open(settings.chroma)


def rss_bytes() -> int:
    """The current resident set size of this process."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def peak_rss_bytes() -> int:
    """The peak resident set size of this process so far.

    On Linux this is ``VmHWM`` from ``/proc/self/status``, the high-water mark of this process's own
    address space. ``getrusage(RUSAGE_SELF).ru_maxrss`` is not used there: the kernel carries it over
    ``execve`` from the forking parent, so a child started by a big parent reports the parent's peak.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for row in status.read_text().splitlines():
            if row.startswith("VmHWM:"):
                return int(row.split()[1]) * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def reset_peak_rss() -> bool:
    """Reset the peak to the current RSS (Linux >= 4.0: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def mib(n: float) -> float:
    return n / (1024 * 1024)


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - started


def best_and_median(values: list[float]) -> tuple[float, float]:
    return min(values), statistics.median(values)


# ------------------------------------------------------------------------------ pipeline building blocks
@dataclass
class Coll:
    """One source collection as the benchmarks need it."""

    name: str
    dim: int
    distance: str
    count: int


def collections_of(source: Any, after_each: Callable[[Any], None] | None = None) -> list[Coll]:
    """Every non-empty collection (name, dimension, Qdrant distance, count); ``after_each(source)`` runs
    after each one is inspected (the ``release`` prototype frees it there)."""
    from runbook_lib.core.mapping import qdrant_distance

    out = []
    for name in source.collection_names():
        dim = source.dimension(name)
        if dim is not None:
            out.append(Coll(name, dim, qdrant_distance(source.space(name)), source.count(name)))
        if after_each is not None:
            after_each(source)
    return out


def chunks(ids: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def qdrant_client_at(path: Path) -> Any:
    from qdrant_client import QdrantClient

    path.mkdir(parents=True, exist_ok=True)
    return QdrantClient(path=str(path))


def create_like(client: Any, coll: Coll) -> None:
    from qdrant_client import models

    client.create_collection(
        coll.name,
        vectors_config=models.VectorParams(
            size=coll.dim, distance=models.Distance(coll.distance), datatype=models.Datatype.FLOAT32
        ),
    )


def upsert_batch(client: Any, name: str, p: Any) -> None:
    """What ``QdrantTarget.upsert`` sends (``models.Batch``, ``wait=True``), without its retry wrapper."""
    from qdrant_client import models

    vectors = p.vectors.tolist() if hasattr(p.vectors, "tolist") else p.vectors
    points = models.Batch(ids=p.ids, vectors=vectors, payloads=p.payloads)
    client.upsert(collection_name=name, points=points, wait=True)


def floor_loop(client: Any, prepared: Sequence[Any]) -> float:
    """The floor: create each collection and upsert its prepared batches, nothing else. Seconds taken."""
    import gc

    gc.collect()
    started = time.perf_counter()
    for p in prepared:
        create_like(client, p.coll)
        for batch in p.batches:
            upsert_batch(client, p.coll.name, batch)
    return time.perf_counter() - started


#: A reader: (source, collections, batch size) -> records read. Points are built and discarded.
Reader = Callable[[Any, list[Coll], int], int]


def map_batch(index: int, batch: Any, coll: Coll) -> Any:
    """``to_points`` exactly as ``copy_collection``'s reader calls it (Cosine rows normalised, when the
    library's ``to_points`` has that option)."""
    import inspect

    from runbook_lib.steps.migrate.pipeline import to_points

    if "normalise" in inspect.signature(to_points).parameters:
        return to_points(index, batch, normalise=coll.distance == "Cosine")
    return to_points(index, batch)  # pragma: no cover - older library


def read_pipeline(source: Any, colls: list[Coll], batch_size: int, *, map_points: bool = True) -> int:
    """What the migration's reader thread does (snapshot_ids, fetch, to_points) into a discarding sink."""
    n = 0
    for coll in colls:
        ids = source.snapshot_ids(coll.name)
        for k, chunk in enumerate(chunks(ids, batch_size)):
            batch = source.fetch(coll.name, chunk, expected_dim=coll.dim)
            if map_points:
                map_batch(k, batch, coll)
            n += len(batch)
        source.release()  # as migrate() does after each collection
    return n


def fetch_only(source: Any, colls: list[Coll], batch_size: int) -> int:
    return read_pipeline(source, colls, batch_size, map_points=False)


def bare_read(source: Any, colls: list[Coll], batch_size: int) -> int:
    """The least a reader can do: list the ids, then ``get`` them by id in the same chunks."""
    from runbook_lib.chroma.source import INCLUDE_ALL

    n = 0
    for coll in colls:
        col = source.client.get_collection(coll.name)
        ids = sorted(col.get(include=[])["ids"])
        for chunk in chunks(ids, batch_size):
            got = col.get(ids=list(chunk), include=INCLUDE_ALL)
            n += len(got["ids"])
    return n


# ------------------------------------------------------------------------------------ instrumentation
@contextmanager
def patched(obj: Any, attr: str, wrapper: Callable[[Any], Any]) -> Iterator[None]:
    """Replace ``obj.attr`` by ``wrapper(original)`` for the block."""
    original = getattr(obj, attr)
    setattr(obj, attr, wrapper(original))
    try:
        yield
    finally:
        setattr(obj, attr, original)


def replaced(value: Any) -> Callable[[Any], Any]:
    """A ``patched`` wrapper that ignores the original."""
    return lambda _original: value


class Clock:
    """Accumulates the wall time and the calls of wrapped functions (from any thread)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def wrap(self, label: str) -> Callable[[Any], Any]:
        def decorator(fn: Any) -> Any:
            def inner(*args: Any, **kwargs: Any) -> Any:
                started = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    elapsed = time.perf_counter() - started
                    with self._lock:
                        self.seconds[label] = self.seconds.get(label, 0.0) + elapsed
                        self.calls[label] = self.calls.get(label, 0) + 1

            return inner

        return decorator

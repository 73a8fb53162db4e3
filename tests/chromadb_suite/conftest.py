"""chromadb's own test modules (shipped in its wheel, ``chromadb/test/property/``) run against the drop-in.

The modules here import chromadb's tests themselves (``from chromadb.test.property.test_filtering import *``);
this conftest provides the fixture they request, ``client`` (chromadb's is ``client(system, database_name)``: a
``ClientAPI`` over a fresh chromadb ``System``), as :class:`SuiteClient`: ``runbook_lib.app.compat.Client`` over an
empty Qdrant Edge shard or an empty qdrant-client local-mode folder, plus the few calls chromadb's harness makes
that are not part of the app API the drop-in promises (``reset``, ``get_settings``, ``set_database``,
``clear_system_cache``, a collection's ``get_model`` / ``_model`` that chromadb's invariants read).

Hypothesis is bounded: a profile with few examples, short state machines and no deadline, active while the modules
are imported (their ``@settings`` copy it then) and during each test (``run_state_machine_as_test`` reads it then).
"""

from __future__ import annotations

import contextlib
import importlib
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from chromadb.config import Settings
from chromadb.types import Collection as CollectionModel
from qdrant_client import QdrantClient

from runbook_lib.app.compat import Client, Collection

PROFILE = "runbook_chromadb_suite"
# chromadb's conftest (imported by its test modules) loads its own profile ("fast": 50 examples, verbose) for the
# whole session when first imported: import it here, then put back the profile that was active, so the rest of the
# suite keeps its own settings.
hypothesis.settings.register_profile(f"{PROFILE}_session", hypothesis.settings.default)
importlib.import_module("chromadb.test.conftest")
hypothesis.settings.load_profile(f"{PROFILE}_session")
hypothesis.settings.register_profile(
    PROFILE,
    max_examples=6,
    stateful_step_count=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
    verbosity=hypothesis.Verbosity.normal,
)
TARGET_VARIABLES = {"edge": "QDRANT_EDGE_PATH", "local": "QDRANT_PATH"}


@contextlib.contextmanager
def suite_profile() -> Iterator[None]:
    """The bounded profile while the block runs, then the one that was active before."""
    before = f"{PROFILE}_before_{uuid.uuid4().hex}"
    hypothesis.settings.register_profile(before, hypothesis.settings.default)
    hypothesis.settings.load_profile(PROFILE)
    try:
        yield
    finally:
        hypothesis.settings.load_profile(before)


class SuiteCollection(Collection):
    """A drop-in collection plus what chromadb's invariants read of chromadb's ``Collection``: its model."""

    def get_model(self) -> CollectionModel:
        client = self._suite_client
        space = client.spaces.get(self.name, "l2")
        return CollectionModel(
            id=uuid.uuid5(uuid.NAMESPACE_URL, f"runbook-suite/{self.name}"),
            name=self.name,
            configuration_json={"hnsw": {"space": space}},
            serialized_schema=None,
            metadata=self.metadata,
            dimension=None,
            tenant="default_tenant",
            database=client.database,
            version=0,
            log_position=0,
        )

    @property
    def _model(self) -> CollectionModel:
        return self.get_model()

    @property
    def _suite_client(self) -> SuiteClient:
        assert isinstance(self._client, SuiteClient)
        return self._client


class SuiteClient(Client):
    """``runbook_lib.app.compat.Client`` plus chromadb's test-harness calls (not part of what the drop-in promises)."""

    collection_type = SuiteCollection

    def __init__(self, env: Mapping[str, str]) -> None:
        super().__init__(env)
        self.database = "default_database"
        self.spaces: dict[str, str] = {}

    def create_collection(self, name: str, *args: Any, **kwargs: Any) -> Collection:
        collection = super().create_collection(name, *args, **kwargs)
        configuration, metadata = kwargs.get("configuration"), kwargs.get("metadata")
        self.spaces.setdefault(name, _declared_space(configuration, metadata))
        return collection

    def delete_collection(self, name: str) -> None:
        super().delete_collection(name)
        self.spaces.pop(name, None)

    def reset(self) -> bool:
        """chromadb's ``reset``: every collection gone."""
        for collection in self.list_collections():
            self.delete_collection(collection.name)
        return True

    def get_settings(self) -> Settings:
        """Settings that say "not in process" (chromadb's log-size invariant reads its System's SQLite log, which
        the drop-in has not) and build chromadb's AdminClient for ``create_isolated_database``."""
        return Settings(chroma_server_http_port=8000, is_persistent=False, allow_reset=True)

    def set_database(self, database: str) -> None:
        """chromadb's isolated database per test: here a fresh store per test already, so every collection goes."""
        self.reset()
        self.database = database

    def clear_system_cache(self) -> None:
        self.close()


def _declared_space(configuration: Any, metadata: Any) -> str:
    hnsw = (configuration or {}).get("hnsw") or {}
    return str(hnsw.get("space") or (metadata or {}).get("hnsw:space") or "l2")


def _target_env(kind: str, path: Path) -> dict[str, str]:
    path.mkdir(parents=True, exist_ok=True)
    if kind == "local":
        QdrantClient(path=str(path)).close()
    return {"VECTOR_DB": "qdrant", TARGET_VARIABLES[kind]: str(path)}


@pytest.fixture(autouse=True)
def _bounded_hypothesis() -> Iterator[None]:
    with suite_profile():
        yield


@pytest.fixture(params=sorted(TARGET_VARIABLES))
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SuiteClient]:
    """chromadb's ``client`` fixture, answered by the drop-in over an empty Qdrant Edge shard / local-mode folder."""
    suite = SuiteClient(_target_env(request.param, tmp_path / "qdrant"))
    yield suite
    suite.close()


#: chromadb's tests the drop-in does not run, each with why (node name, or name without the target parameter).
SKIPPED: dict[str, str] = {
    "test_embeddings_state": (
        "Qdrant keeps a Cosine collection's vectors unit-length, so a cosine collection's embeddings read back "
        "normalised; test_embeddings_state_without_cosine runs chromadb's state machine on the other spaces"
    ),
    "test_add_then_purge[local]": (
        "5,000 deletes in 100-id batches take minutes on qdrant-client's local mode (a test double); runs on Edge"
    ),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent != Path(__file__).parent:
            continue
        reason = SKIPPED.get(item.name) or SKIPPED.get(item.name.split("[")[0])
        if reason is not None:
            item.add_marker(pytest.mark.skip(reason=reason))

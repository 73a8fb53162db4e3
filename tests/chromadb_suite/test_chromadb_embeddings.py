"""chromadb's ``chromadb/test/property/test_embeddings.py`` (its add/update/upsert/delete state machine and the
tests around it), the tests themselves, against the drop-in (this folder's conftest's ``client``).

One addition: chromadb's state machine itself, run on every collection chromadb's strategy draws except cosine ones
(``test_embeddings_state`` is skipped for them, see the conftest): Qdrant keeps a Cosine collection's vectors
unit-length, so the embeddings the drop-in reads back are the normalised vectors, not the ones written.
"""

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import initialize, run_state_machine_as_test

from chromadb_suite.conftest import suite_profile

with suite_profile():
    from chromadb.test.property.test_embeddings import *  # noqa: F403
    from chromadb.test.property.test_embeddings import EmbeddingStateMachine, collection_st, create_isolated_database


def _not_cosine(collection: Any) -> bool:
    return (collection.metadata or {}).get("hnsw:space") != "cosine"


class EmbeddingStateMachineWithoutCosine(EmbeddingStateMachine):
    """chromadb's ``EmbeddingStateMachine``, its collections drawn from its own strategy less the cosine ones."""

    @initialize(collection=collection_st.filter(_not_cosine))  # type: ignore[misc]
    def initialize(self, collection: Any) -> None:
        EmbeddingStateMachine.initialize(self, collection)


def test_embeddings_state_without_cosine(caplog: pytest.LogCaptureFixture, client: Any) -> None:
    create_isolated_database(client)
    run_state_machine_as_test(
        lambda: EmbeddingStateMachineWithoutCosine(client),
        settings=settings(deadline=None, suppress_health_check=list(HealthCheck)),
    )

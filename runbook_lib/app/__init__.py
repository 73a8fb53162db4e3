"""The app layer: what a production app imports after the migration, with chromadb and qdrant-client alone.

:class:`VectorDBClient` searches Qdrant (``VECTOR_DB=qdrant``, the default) or ChromaDB (``VECTOR_DB=chroma``,
a rollback) and answers both with the same :class:`SearchResult` in Chroma's conventions (ids, documents,
metadata, uris, distances) and the same ``where`` filters. It writes too, with Chroma's ``add`` / ``upsert`` /
``update`` / ``delete`` / ``get`` / ``count``, and ``VECTOR_DB=dual`` writes to both stores during a cutover.
It is configured from the runbook's environment variables. Every error it raises is a :class:`RunbookError` with
a one-sentence message (invalid arguments: :class:`ValueError`).

Nothing here imports the runbook layer (steps, notebooks, state, the ``runbook`` command) or its packages
(papermill, nbconvert, pandas, matplotlib, ...): this package depends only on :mod:`runbook_lib.config`,
:mod:`runbook_lib.core`, :mod:`runbook_lib.chroma`, :mod:`runbook_lib.qdrant` and :mod:`runbook_lib.errors`.
"""

from runbook_lib.app.client import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_HEALTH_TIMEOUT_S,
    VECTOR_DB_VARIABLE,
    Backend,
    VectorDBClient,
    backend_from_env,
)
from runbook_lib.app.errors import QueryDimensionMismatchError, UnknownCollectionError, WriteDimensionMismatchError
from runbook_lib.app.journal import Journal, JournalEntry, JournalError
from runbook_lib.app.records import GetResult
from runbook_lib.app.results import SearchResult
from runbook_lib.errors import ConfigError, DimensionMismatchError, RunbookError, SourceError, TargetError

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_HEALTH_TIMEOUT_S",
    "VECTOR_DB_VARIABLE",
    "Backend",
    "ConfigError",
    "DimensionMismatchError",
    "GetResult",
    "Journal",
    "JournalEntry",
    "JournalError",
    "QueryDimensionMismatchError",
    "RunbookError",
    "SearchResult",
    "SourceError",
    "TargetError",
    "UnknownCollectionError",
    "VectorDBClient",
    "WriteDimensionMismatchError",
    "backend_from_env",
]

"""Where apps written against earlier releases import the wrapper from; the wrapper lives in :mod:`runbook_lib.app`.

Re-exports the public names the old single module had (the client, its result type, its errors and the
``VECTOR_DB`` helpers), so ``from runbook_lib.vector_db import VectorDBClient, SearchResult`` keeps working.
"""

from runbook_lib.app import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_HEALTH_TIMEOUT_S,
    VECTOR_DB_VARIABLE,
    Backend,
    ConfigError,
    DimensionMismatchError,
    QueryDimensionMismatchError,
    RunbookError,
    SearchResult,
    SourceError,
    TargetError,
    UnknownCollectionError,
    VectorDBClient,
    backend_from_env,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "DEFAULT_HEALTH_TIMEOUT_S",
    "VECTOR_DB_VARIABLE",
    "Backend",
    "ConfigError",
    "DimensionMismatchError",
    "QueryDimensionMismatchError",
    "RunbookError",
    "SearchResult",
    "SourceError",
    "TargetError",
    "UnknownCollectionError",
    "VectorDBClient",
    "backend_from_env",
]

"""The errors the app layer adds to :mod:`runbook_lib.errors`, and the one-line form of a backend's exception."""

from __future__ import annotations

from runbook_lib.errors import DimensionMismatchError, RunbookError


class UnknownCollectionError(RunbookError):
    """The collection asked for does not exist in the backend in use."""

    exit_code = 2

    def __init__(self, collection: str, backend_description: str) -> None:
        super().__init__(
            f"Collection {collection!r} does not exist in {backend_description}: check the collection name, "
            "and that the migration has run against this backend.",
            collection=collection,
            backend=backend_description,
        )


class QueryDimensionMismatchError(DimensionMismatchError):
    """A query vector's dimension differs from the collection's (the guide's "Vector dimension mismatch")."""

    def __init__(self, collection: str, expected: int, found: int) -> None:
        super().__init__(collection, expected, found)
        self.message = (
            f"The query vector for collection {collection!r} has dimension {found}, expected {expected}: "
            "embed queries with the same model (and dimension) that produced the collection's vectors."
        )
        self.args = (self.message,)


def short_error(exc: BaseException) -> str:
    """The first line of ``exc``'s message (at most 400 characters), or its type's name when it has none."""
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:400]


def closed_client_error(backend_description: str) -> RunbookError:
    """The error for a search or probe through a client that was closed."""
    return RunbookError(
        f"This VectorDBClient ({backend_description}) is closed: create a new one (closing releases the "
        "connection and, in Qdrant's local mode, the lock on QDRANT_PATH)."
    )


class WriteDimensionMismatchError(DimensionMismatchError):
    """An embedding written through the wrapper does not fit the collection's vectors."""

    def __init__(self, collection: str, expected: int, found: int) -> None:
        super().__init__(collection, expected, found)
        self.message = (
            f"The embeddings written to collection {collection!r} have dimension {found}, expected {expected}: "
            "embed with the same model (and dimension) that produced the collection's vectors."
        )
        self.args = (self.message,)

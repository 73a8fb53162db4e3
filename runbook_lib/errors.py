"""One exception hierarchy for the runbook.

Every error a user can meet derives from :class:`RunbookError` and prints as one clear sentence
(what is wrong and how to fix it). ``exit_code`` is what the ``runbook`` command exits with:
``2`` for usage and configuration problems (nothing ran), ``1`` for a step that ran and failed.
"""

from __future__ import annotations


class RunbookError(Exception):
    """Base class: a user-facing error with a one-sentence message."""

    exit_code: int = 1

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields
        for key, value in fields.items():
            setattr(self, key, value)

    def __str__(self) -> str:
        return self.message


class ConfigError(RunbookError):
    """A setting (environment variable or parameter) is missing or invalid. Nothing was changed."""

    exit_code = 2


class SourceError(RunbookError):
    """ChromaDB could not be read (unreachable server, unknown collection, unreadable directory)."""

    exit_code = 2


class TargetError(RunbookError):
    """Qdrant refused or failed an operation."""


class BackupError(RunbookError):
    """A backup could not be written, or a backup failed its checksum verification."""


class DimensionMismatchError(RunbookError):
    """A collection holds vectors of a dimension other than the one it was planned with."""

    def __init__(self, collection: str, expected: int, found: int, record_id: str | None = None) -> None:
        where = f" (record {record_id!r})" if record_id is not None else ""
        super().__init__(
            f"Collection {collection!r} has a vector of dimension {found}{where}, expected {expected}: "
            "every vector in a collection must have the same dimension; fix or remove the odd records "
            "in ChromaDB, or leave this collection out with the `collections` parameter.",
            collection=collection,
            expected=expected,
            found=found,
            record_id=record_id,
        )


class MigrationError(RunbookError):
    """Copying records failed (a permanent write error, or a count check that did not match)."""


class SyncError(RunbookError):
    """A sync could not carry a change over (a write that did not land, a record that vanished mid-sync)."""


class VerificationFailed(RunbookError):
    """The target differs from the source; the step's result lists what differs."""


class ExistingCollectionError(ConfigError):
    """A target collection exists that this run did not create."""


class OutputsFullError(RunbookError):
    """The run folder could not be written: its disk is full. What was filed so far is intact (atomic writes)."""


class RunBusyError(ConfigError):
    """Another process is driving the same run (its lock is held). Nothing was changed."""

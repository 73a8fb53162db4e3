"""chromadb's error types that the app layer raises where chromadb would, so an app's ``except`` clauses keep
working after it moves to the drop-in (``runbook_lib.app.compat``)."""

from __future__ import annotations

from chromadb.errors import DuplicateIDError as _ChromaDuplicateIDError


class DuplicateIDError(_ChromaDuplicateIDError, ValueError):
    """An id given twice in one write: chromadb's ``DuplicateIDError``, and a ``ValueError`` as before."""

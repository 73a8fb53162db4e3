"""A collection's embedding function rebuilt from what Chroma recorded, with chromadb's own registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runbook_lib.errors import ConfigError


def rebuild_embedding_function(collection: str, recorded: Mapping[str, Any]) -> Any:
    """The embedding function ``recorded`` (``{"name", "config"}``, as Chroma keeps it in the collection's
    configuration) for ``collection``, built by ``chromadb.utils.embedding_functions``; :class:`ConfigError` in one
    sentence when the registry does not know it or cannot build it."""
    from chromadb.utils.embedding_functions import config_to_embedding_function, known_embedding_functions

    name = recorded.get("name")
    if name not in known_embedding_functions:
        raise ConfigError(
            f"Collection {collection!r} was embedded with {name!r}, which chromadb's embedding function registry "
            "does not know here: register it (chromadb.utils.embedding_functions.register_embedding_function) or "
            "pass embedding_function= to get_collection."
        )
    try:
        return config_to_embedding_function({"name": name, "config": recorded.get("config") or {}})
    except Exception as exc:
        raise ConfigError(
            f"Collection {collection!r}'s embedding function {name!r} could not be rebuilt from its recorded "
            f"configuration ({exc}): pass embedding_function= to get_collection."
        ) from None

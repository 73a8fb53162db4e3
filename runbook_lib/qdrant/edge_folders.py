"""Where Qdrant Edge keeps collections: one shard folder per collection, ``<QDRANT_EDGE_PATH>/<name>/``.

A folder is a shard when it holds Edge's configuration file; hidden folders (a shard being removed) never are.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

from runbook_lib.errors import ConfigError, TargetError

#: The file in which Edge keeps a shard's configuration (vectors, HNSW, optimizers); its presence marks a shard.
CONFIG_FILE = "edge_config.json"


def shard_folder(root: Path, name: str) -> Path:
    """``<root>/<name>``, for a collection name that is one visible folder name."""
    if not name or name.startswith(".") or any(c in name for c in "/\\\0") or len(name.encode()) > 255:
        raise ConfigError(
            f"{name!r} cannot be a Qdrant Edge collection: each collection is the folder <QDRANT_EDGE_PATH>/<name>, "
            "so its name must be one folder name (no /, \\ or leading dot); choose another target name."
        )
    return root / name


def is_shard(folder: Path) -> bool:
    return not folder.name.startswith(".") and (folder / CONFIG_FILE).is_file()


def shard_names(root: Path) -> list[str]:
    """The collections under ``root`` (none before the root exists)."""
    return sorted(d.name for d in root.iterdir() if is_shard(d)) if root.is_dir() else []


def read_config(root: Path, name: str) -> dict[str, Any]:
    """The shard's configuration as Edge wrote it."""
    path = shard_folder(root, name) / CONFIG_FILE
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise TargetError(
            f"Qdrant Edge has no collection {name!r} (no shard at {path.parent}).", collection=name
        ) from None
    except (OSError, ValueError) as exc:
        raise TargetError(f"Qdrant Edge cannot read the configuration of {name!r} ({path}): {exc}") from exc


def remove_shard_folder(root: Path, name: str) -> None:
    """Remove a closed shard's folder: renamed to a hidden folder first, so a half-removed shard is never a
    collection."""
    folder = shard_folder(root, name)
    doomed = root / f".deleting-{name}-{uuid.uuid4().hex[:8]}"
    try:
        folder.rename(doomed)
        shutil.rmtree(doomed)
    except OSError as exc:
        left = doomed if doomed.exists() else folder
        raise TargetError(
            f"Qdrant Edge could not remove collection {name!r} ({folder}): {exc.strerror}; remove {left} by hand.",
            collection=name,
        ) from exc

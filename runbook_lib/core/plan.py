"""The migration plan: for each source collection, where it goes in Qdrant and how.

Computed the same way by the dry run (to show it) and by the migration (to execute it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from runbook_lib.core.mapping import id_scheme, qdrant_distance
from runbook_lib.errors import ConfigError


class CollectionReader(Protocol):
    """What planning needs from a source (``runbook_lib.chroma.source.ChromaSource`` implements it)."""

    def space(self, name: str) -> str: ...

    def dimension(self, name: str) -> int | None: ...

    def snapshot_ids(self, name: str) -> list[str]: ...


#: Qdrant collection names are at most 255 bytes.
MAX_QDRANT_NAME = 255


@dataclass(frozen=True)
class PlanEntry:
    source: str
    count: int
    dimension: int | None
    space: str
    distance: str
    target: str  # the Qdrant collection the points are written to
    alias: str | None  # with cutover="alias": the name the app queries (points at ``target``)
    id_scheme: str

    @property
    def query_name(self) -> str:
        return self.alias or self.target

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_collections(available: Sequence[str], requested: Sequence[str] | None) -> list[str]:
    """The collections a step works on: all of ``available`` when ``requested`` is empty, else exactly those (in
    the order asked, once each); an unknown name is a ConfigError listing what exists."""
    if not requested:
        return list(available)
    missing = [n for n in dict.fromkeys(requested) if n not in available]
    if missing:
        raise ConfigError(
            f"Collection {missing[0]!r} does not exist in ChromaDB"
            + (f" (nor {', '.join(repr(m) for m in missing[1:])})" if len(missing) > 1 else "")
            + f": available collections are {', '.join(repr(a) for a in available) or '(none)'}. "
            "Fix the `collections` parameter; nothing was changed.",
            collection=missing[0],
        )
    return list(dict.fromkeys(requested))


def target_names(source: str, run_id: str, cutover: str) -> tuple[str, str | None]:
    """(collection, alias) for a source collection: plain keeps the name; alias writes a versioned
    collection ``<name>__<run_id>`` and points the alias ``<name>`` at it."""
    if cutover == "alias":
        return f"{source}__{run_id}", source
    return source, None


def plan_collection(
    source: CollectionReader, name: str, *, run_id: str, cutover: str = "plain", ids: list[str] | None = None
) -> PlanEntry:
    """The plan for one collection; ``ids`` is the collection's id snapshot when the caller already has it."""
    space = source.space(name)
    target, alias = target_names(name, run_id, cutover)
    if len(target.encode()) > MAX_QDRANT_NAME:
        raise ConfigError(
            f"Collection name {name!r} is too long for Qdrant ({len(target.encode())} bytes, the limit is "
            f"{MAX_QDRANT_NAME}): rename it in ChromaDB or leave it out with the `collections` parameter."
        )
    if ids is None:
        ids = source.snapshot_ids(name)
    return PlanEntry(
        source=name,
        count=len(ids),
        dimension=source.dimension(name),
        space=space,
        distance=qdrant_distance(space),
        target=target,
        alias=alias,
        id_scheme=id_scheme(ids) if ids else "n/a (empty)",
    )

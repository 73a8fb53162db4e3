"""The payload indexes a collection gets before its first point: which keys, which type, and why.

Qdrant's bulk-load order is collection, payload indexes, points: the filter-aware HNSW links are built only for
indexes that exist when the graph is built, and Qdrant Cloud's strict mode refuses a filter on a key without an
index (``unindexed_filtering_retrieve``), with at most :data:`CLOUD_MAX_PAYLOAD_INDEXES` indexes per collection.

One index per metadata key, typed from the values the dry run found (``str`` -> keyword, ``int`` -> integer,
``float`` -> float, ``bool`` -> bool; a list is indexed by its elements' type, as Qdrant indexes arrays), and a
full-text index on the document so ``where_document`` filters work. A key whose values no single index type fits
(strings and numbers, booleans and numbers, lists of mixed types) is not indexed, and the plan says why. Pure
functions, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

from qdrant_client import models

from runbook_lib.core.filters import payload_path
from runbook_lib.errors import ConfigError

IndexType = Literal["keyword", "integer", "float", "bool", "text"]

#: Qdrant Cloud's cap on payload indexes per collection (its cluster configuration docs).
CLOUD_MAX_PAYLOAD_INDEXES = 100

#: The ``key`` of the document's full-text index in a plan (never a metadata key: those are strings without ``#``
#: by Chroma's rules for ``where``, which reserves ``#`` for its own fields).
DOCUMENT_KEY = "#document"

_SCALAR_INDEX: dict[str, IndexType] = {"str": "keyword", "int": "integer", "float": "float", "bool": "bool"}


@dataclass(frozen=True)
class PayloadIndex:
    """One planned index: the metadata ``key`` (or :data:`DOCUMENT_KEY`), its payload ``path``, its type, why."""

    key: str
    path: str
    index_type: IndexType
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PayloadIndex:
        return cls(key=data["key"], path=data["path"], index_type=data["index_type"], why=data["why"])


@dataclass(frozen=True)
class Unindexed:
    """A metadata key the plan leaves without an index, and why."""

    key: str
    why: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def value_type(value: Any) -> str:
    """The type name the plan knows a metadata value by: ``str``/``int``/``float``/``bool``, or ``list:<element
    types joined by |>`` for a list (``list:`` when empty)."""
    if isinstance(value, list):
        return "list:" + "|".join(sorted({type(v).__name__ for v in value}))
    return type(value).__name__


def add_key_types(key_types: dict[str, set[str]], metadatas: Iterable[Mapping[str, Any] | None]) -> None:
    """Add the :func:`value_type` of every metadata value to ``key_types`` (key -> type names)."""
    for meta in metadatas:
        for key, value in (meta or {}).items():
            key_types.setdefault(key, set()).add(value_type(value))


def index_type_for(types: Iterable[str]) -> tuple[IndexType | None, str]:
    """The index type for a key whose values have these :func:`value_type` names, and the reason (or why none)."""
    elements: set[str] = set()
    lists = False
    for name in types:
        if name.startswith("list:"):
            lists = True
            elements.update(t for t in name.removeprefix("list:").split("|") if t)
        else:
            elements.add(name)
    if not elements:
        return None, "only empty lists: nothing to index"
    unknown = elements - set(_SCALAR_INDEX)
    if unknown:
        return None, f"values of type {', '.join(sorted(unknown))}: no Qdrant index type fits"
    seen = " and ".join(sorted(elements)) + (" (in lists)" if lists else "")
    if len(elements) == 1:
        (only,) = elements
        return _SCALAR_INDEX[only], f"{seen} values"
    if elements == {"int", "float"}:
        return "float", (
            f"{seen} values: a float index serves ranges on both; equality on an integer operand is not indexed "
            "(a server in strict mode refuses it)"
        )
    return None, f"{seen} values: Qdrant indexes one type per key; filter on this key without an index"


def plan_payload_indexes(
    key_types: Mapping[str, Iterable[str]],
    choice: str,
    *,
    collection: str,
    flat: bool = False,
    document_path: str | None = None,
    has_documents: bool = False,
    cap: int = CLOUD_MAX_PAYLOAD_INDEXES,
) -> tuple[list[PayloadIndex], list[Unindexed]]:
    """The indexes for one collection, and the keys left unindexed.

    ``key_types``: metadata key -> the :func:`value_type` names found. ``choice`` is the ``payload_indexes``
    parameter: ``auto`` (every key that has a type, and the document's text index; more than ``cap`` stops with
    one sentence saying to choose), ``none``, or comma-separated keys (keys this collection lacks are skipped: the
    caller checks each listed key exists in some collection). ``flat``: metadata keys are top-level payload keys.
    ``document_path``: where the layout writes the document text (None: the layout keeps no plain text field)."""
    mode, wanted = parse_choice(choice)
    indexes: list[PayloadIndex] = []
    unindexed: list[Unindexed] = []
    if mode == "none":
        return indexes, [Unindexed(k, "payload_indexes=none") for k in sorted(key_types)]
    for key in sorted(key_types):
        if mode == "list" and key not in wanted:
            unindexed.append(Unindexed(key, "not listed in payload_indexes"))
            continue
        index_type, why = index_type_for(key_types[key])
        if index_type is None:
            unindexed.append(Unindexed(key, why))
            continue
        try:
            path = payload_path(key, flat=flat)
        except ConfigError:
            unindexed.append(Unindexed(key, 'the key contains " or \\, which a Qdrant payload path cannot address'))
            continue
        indexes.append(PayloadIndex(key, path, index_type, why))
    if has_documents and document_path is not None and (mode == "auto" or DOCUMENT_KEY in wanted):
        indexes.append(PayloadIndex(DOCUMENT_KEY, document_path, "text", "where_document filters on the document"))
    if len(indexes) > cap:
        raise ConfigError(
            f"Collection {collection!r} would get {len(indexes)} payload indexes, more than Qdrant Cloud's cap of "
            f"{cap} per collection: choose the keys the app filters on with -p payload_indexes k1,k2,... "
            "(or -p payload_indexes none)."
        )
    return indexes, unindexed


def parse_choice(choice: str) -> tuple[Literal["auto", "none", "list"], set[str]]:
    """``auto`` | ``none`` | the set of keys listed (``#document`` names the document's text index)."""
    text = (choice or "").strip()
    if text in ("auto", "none"):
        return text, set()  # type: ignore[return-value]
    keys = {k.strip() for k in text.split(",") if k.strip()}
    if not keys:
        raise ConfigError(
            "payload_indexes is empty: use auto (every metadata key), none, or a comma-separated list of keys."
        )
    return "list", keys


def missing_keys(choice: str, key_types_by_collection: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Keys listed in ``payload_indexes`` that no planned collection has (the step refuses them in one sentence)."""
    mode, wanted = parse_choice(choice)
    if mode != "list":
        return []
    present = {k for types in key_types_by_collection.values() for k in types} | {DOCUMENT_KEY}
    return sorted(wanted - present)


# --- strict mode: what a server would refuse ---------------------------------------------------------------------
def filterable_paths(
    key_types: Mapping[str, Any], *, flat: bool, document_path: str | None, has_documents: bool
) -> dict[str, str]:
    """What the app can filter on in one collection -> its payload path: every metadata key (``where``) a payload
    path can address, and the document (``where_document``) where the layout keeps it as a plain string."""
    out: dict[str, str] = {}
    for key in sorted(key_types):
        try:
            out[f"metadata key {key!r}"] = payload_path(key, flat=flat)
        except ConfigError:
            continue  # no Qdrant filter can name it, indexed or not
    if has_documents and document_path is not None:
        out["where_document"] = document_path
    return out


def strict_mode_refusals(
    strict: models.StrictModeConfig | models.StrictModeConfigOutput | None,
    *,
    collection: str,
    filterable: Mapping[str, str],
    indexed: Iterable[str],
) -> list[str]:
    """One sentence per filter the app could send to ``collection`` that its strict mode would refuse: a key
    without a payload index (planned or existing: ``indexed`` holds their payload paths) while strict mode refuses
    unindexed filtering on reads (``unindexed_filtering_retrieve``: query, get) or writes
    (``unindexed_filtering_update``: delete by ``where``), and the limits a call can exceed. Empty when strict mode
    is off or the target has none (None)."""
    if strict is None or not strict.enabled:
        return []
    flags = [
        (flag, calls)
        for flag, calls in (
            ("unindexed_filtering_retrieve", "query and get"),
            ("unindexed_filtering_update", "delete with where"),
        )
        if getattr(strict, flag) is False  # None: Qdrant's default, unindexed filtering allowed
    ]
    out: list[str] = []
    have = set(indexed)
    if flags:
        refused = " and ".join(calls for _, calls in flags)
        names = " and ".join(flag for flag, _ in flags)
        for what, path in filterable.items():
            if path not in have:
                out.append(
                    f"{collection!r}: {refused} filtering on {what} (payload path {path!r}) would be refused, "
                    f"since strict mode has {names} false and the path has no payload index: index it "
                    "(-p payload_indexes) or allow unindexed filtering on the collection."
                )
    if strict.max_query_limit is not None:
        out.append(
            f"{collection!r}: strict mode refuses a query or get for more than {strict.max_query_limit} records "
            "(n_results, limit): keep the app's n_results and limit at or below it."
        )
    if strict.filter_max_conditions is not None:
        out.append(
            f"{collection!r}: strict mode refuses a filter with more than {strict.filter_max_conditions} "
            "conditions: a where with that many clauses or $in values fails there."
        )
    return out

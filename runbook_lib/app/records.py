"""What the wrapper's writes and reads carry, checked once for both backends: :class:`Records` and :class:`GetResult`.

Writes are validated here, before any store is touched, with chromadb 1.5's rules, so a call that ChromaDB would
refuse is refused for Qdrant too (and, with ``VECTOR_DB=dual``, before either store is written):

* ``ids``: a non-empty list of non-empty, distinct strings (one string is taken as a list of one).
* ``embeddings``: one row of finite numbers per id, all of one dimension (float32, as both stores keep them).
* ``documents`` / ``uris``: one string or None per id. ``metadatas``: one dict or None per id; a dict is non-empty,
  its keys are strings, its values are str, int, float, bool or a non-empty list of one of those types. A None
  value removes the key in :meth:`update` and :meth:`upsert` (Chroma's rule) and is refused by :meth:`add`.
  Floats must be finite and ints fit in 64 bits (what a Qdrant payload can hold).

Chroma's semantics that both backends follow (checked against chromadb 1.5.9 in ``tests/test_app_writes.py``):
``add`` ignores ids that already exist; ``update`` ignores ids that do not; ``update`` and ``upsert`` of an
existing record change only the fields given (a None entry keeps that field), and merge metadata key by key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from runbook_lib.core.chroma_floats import chroma_metadata, metadata_chroma_stores_as

WriteKind = Literal["add", "upsert", "update"]
Field = Literal["embeddings", "documents", "metadatas", "uris"]

#: What :meth:`get` may include, and what it includes by default (Chroma's default).
INCLUDABLE: tuple[Field, ...] = ("embeddings", "documents", "metadatas", "uris")
DEFAULT_INCLUDE: tuple[Field, ...] = ("metadatas", "documents")

_INT64 = 2**63


@dataclass(frozen=True)
class Records:
    """One write call's records, validated and aligned by position. A field that was not given is None."""

    ids: list[str]
    embeddings: np.ndarray | None  # (n, dim) float32
    documents: list[str | None] | None
    metadatas: list[dict[str, Any] | None] | None
    uris: list[str | None] | None
    #: The metadata floats are already as Chroma stores them (records copied from a store, not written by the app).
    stored_floats: bool = False

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dimension(self) -> int | None:
        return None if self.embeddings is None else int(self.embeddings.shape[1])

    def as_chroma_stores(self) -> Records:
        """These records with every float metadata value as chromadb stores it (:mod:`runbook_lib.core.chroma_floats`):
        what a store other than Chroma must keep, so a filter at the value written selects what Chroma selects."""
        if self.metadatas is None or self.stored_floats:
            return self
        return replace(self, metadatas=[chroma_metadata(m) for m in self.metadatas], stored_floats=True)

    def for_chroma(self) -> Records:
        """What to hand chromadb so it stores these records' floats as they are: the app's values unchanged (Chroma
        shifts them as it always does), copied values through :func:`metadata_chroma_stores_as`."""
        if self.metadatas is None or not self.stored_floats:
            return self
        return replace(self, metadatas=[metadata_chroma_stores_as(m) for m in self.metadatas], stored_floats=False)


@dataclass(frozen=True, eq=False)
class GetResult:
    """Records of one collection in Chroma's ``GetResult`` shape; a field not in ``included`` is None.

    ``res["ids"]`` works as with chromadb. Records come in the order of the ``ids`` asked for, or ordered by
    Chroma id when no ids were given, in both backends (so ``limit``/``offset`` pages are the same).
    ``metadatas`` holds ``{}`` for a record without metadata (as :class:`SearchResult` does); ``embeddings``
    is a float32 array (n, dim) -- from a Qdrant Cosine collection the unit-length vectors the migration wrote.
    """

    ids: list[str]
    embeddings: np.ndarray | None
    documents: list[str | None] | None
    metadatas: list[dict[str, Any]] | None
    uris: list[str | None] | None
    included: list[str]

    def __getitem__(self, key: str) -> Any:
        if key not in ("ids", "embeddings", "documents", "metadatas", "uris", "included"):
            raise KeyError(key)
        return getattr(self, key)

    def __len__(self) -> int:
        return len(self.ids)


def to_records(
    kind: WriteKind,
    ids: str | Sequence[str],
    embeddings: Sequence[Sequence[float]] | np.ndarray | None,
    documents: Sequence[str | None] | None,
    metadatas: Sequence[Mapping[str, Any] | None] | None,
    uris: Sequence[str | None] | None,
) -> Records:
    """Validate one write's arguments; :class:`ValueError` (one sentence) for anything Chroma would refuse."""
    id_list = _ids(ids)
    n = len(id_list)
    if kind != "update" and embeddings is None:
        raise ValueError(f"{kind} needs one embedding per id: this wrapper never computes embeddings.")
    if kind == "update" and embeddings is None and documents is None and metadatas is None and uris is None:
        raise ValueError("update needs at least one of embeddings, documents, metadatas or uris to change.")
    return Records(
        ids=id_list,
        embeddings=None if embeddings is None else _embeddings(embeddings, n),
        documents=_strings("documents", documents, n),
        metadatas=None if metadatas is None else _metadatas(kind, metadatas, n),
        uris=_strings("uris", uris, n),
    )


def ids_argument(ids: str | Sequence[str] | None) -> list[str] | None:
    """The ``ids`` of a get or delete: None, or validated as for a write."""
    return None if ids is None else _ids(ids)


def include_argument(include: Sequence[str] | None) -> tuple[Field, ...]:
    """The fields a get returns besides ids, validated (Chroma's ``data`` and ``distances`` are not offered)."""
    if include is None:
        return DEFAULT_INCLUDE
    if isinstance(include, str):
        raise ValueError(f"include must be a list such as ['documents', 'metadatas'], got the string {include!r}.")
    fields: list[Field] = []
    for item in include:
        if item not in INCLUDABLE:
            raise ValueError(f"include may list {', '.join(INCLUDABLE)}; {item!r} is not one of them.")
        if item not in fields:
            fields.append(item)  # type: ignore[arg-type]
    return tuple(fields)


def page_argument(limit: int | None, offset: int | None) -> tuple[int | None, int]:
    for name, value in (("limit", limit), ("offset", offset)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ValueError(f"{name} must be a non-negative integer or None, got {value!r}.")
    return limit, offset or 0


def page(ids: list[str], limit: int | None, offset: int) -> list[str]:
    return ids[offset:] if limit is None else ids[offset : offset + limit]


def merge_metadata(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, Any]:
    """Chroma's metadata update: keys of ``new`` replace those of ``old``, a None value removes its key."""
    merged = dict(old or {})
    for key, value in (new or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def field_or(values: list[Any] | None, i: int, current: Any) -> Any:
    """The new value of a field at position ``i``, or ``current`` when the field or its entry is None."""
    if values is None or values[i] is None:
        return current
    return values[i]


# --- checks ----------------------------------------------------------------------------------------
def _ids(ids: str | Sequence[str]) -> list[str]:
    id_list = [ids] if isinstance(ids, str) else list(ids)
    if not id_list:
        raise ValueError("ids must be a non-empty list of strings.")
    seen: set[str] = set()
    for rid in id_list:
        if not isinstance(rid, str) or rid == "":
            raise ValueError(f"Every id must be a non-empty string, got {rid!r}.")
        if rid in seen:
            raise ValueError(f"ids must be unique within one call; {rid!r} appears more than once.")
        seen.add(rid)
    return id_list


def _embeddings(embeddings: Sequence[Sequence[float]] | np.ndarray, n: int) -> np.ndarray:
    try:
        array = np.asarray(embeddings, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError("embeddings must be one list of numbers per id, all of the same dimension.") from None
    if array.ndim != 2 or array.shape[1] == 0:
        raise ValueError(f"embeddings must be one non-empty list of numbers per id, got shape {array.shape}.")
    if array.shape[0] != n:
        raise ValueError(f"embeddings has {array.shape[0]} rows for {n} ids: give one embedding per id.")
    if not np.all(np.isfinite(array)):
        raise ValueError("embeddings must not contain NaN or infinity.")
    return array.astype(np.float32)


def _strings(name: str, values: Sequence[str | None] | None, n: int) -> list[str | None] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    out = list(values)
    if len(out) != n:
        raise ValueError(f"{name} has {len(out)} entries for {n} ids: give one per id (None for none).")
    for value in out:
        if value is not None and not isinstance(value, str):
            raise ValueError(f"Every entry of {name} must be a string or None, got {value!r}.")
    return out


def _metadatas(kind: WriteKind, metadatas: Sequence[Mapping[str, Any] | None], n: int) -> list[dict[str, Any] | None]:
    if isinstance(metadatas, Mapping):
        metadatas = [metadatas]
    out = list(metadatas)
    if len(out) != n:
        raise ValueError(f"metadatas has {len(out)} entries for {n} ids: give one per id (None for none).")
    return [None if m is None else _metadata(kind, m) for m in out]


def _metadata(kind: WriteKind, metadata: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise ValueError(f"Every metadata must be a dict or None, got {type(metadata).__name__}.")
    if not metadata:
        raise ValueError("A metadata dict must not be empty: pass None for a record without metadata.")
    for key, value in metadata.items():
        if not isinstance(key, str):
            raise ValueError(f"Metadata keys must be strings, got {key!r}.")
        if key == "chroma:document":
            raise ValueError("The metadata key 'chroma:document' is reserved by ChromaDB.")
        if value is None:
            if kind == "add":
                raise ValueError(
                    f"Metadata key {key!r} is None: add takes no None values (in update and upsert, None "
                    "removes the key)."
                )
        elif isinstance(value, list):
            _list_value(key, value)
        else:
            _scalar_value(key, value)
    return dict(metadata)


def _scalar_value(key: str, value: Any) -> None:
    if isinstance(value, bool | str):
        return
    if isinstance(value, int):
        if not -_INT64 <= value < _INT64:
            raise ValueError(f"Metadata key {key!r} holds {value}, which does not fit in a 64-bit integer.")
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"Metadata key {key!r} holds {value!r}: metadata numbers must be finite.")
        return
    raise ValueError(
        f"Metadata key {key!r} holds a {type(value).__name__}: values must be str, int, float, bool or a list of one "
        "of those."
    )


def _list_value(key: str, value: list[Any]) -> None:
    if not value:
        raise ValueError(f"Metadata key {key!r} holds an empty list: a list value must not be empty.")
    first = type(value[0])
    for item in value:
        if type(item) is not first or first not in (str, int, float, bool):
            raise ValueError(
                f"Metadata key {key!r} holds {value!r}: a list value holds str, int, float or bool, all of one type."
            )
        _scalar_value(key, item)


def get_result(
    include: Sequence[Field],
    ids: list[str],
    vectors: list[Any],
    documents: list[str | None],
    metadatas: list[Mapping[str, Any] | None],
    uris: list[str | None],
) -> GetResult:
    """A :class:`GetResult` of aligned columns; the fields not in ``include`` are None."""
    embeddings: np.ndarray | None = None
    if "embeddings" in include:
        rows = [np.asarray(v, dtype=np.float32) for v in vectors]
        embeddings = np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
    return GetResult(
        ids=list(ids),
        embeddings=embeddings,
        documents=list(documents) if "documents" in include else None,
        metadatas=[dict(m) if m else {} for m in metadatas] if "metadatas" in include else None,
        uris=list(uris) if "uris" in include else None,
        included=list(include),
    )


def select_rows(result: GetResult, rows: Sequence[int], include: Sequence[Field]) -> GetResult:
    """The records of ``result`` at positions ``rows`` (in that order), with only the fields in ``include``."""

    def column(values: list[Any] | None, name: Field) -> list[Any] | None:
        return [values[i] for i in rows] if name in include and values is not None else None

    embeddings = None
    if "embeddings" in include and result.embeddings is not None:
        embeddings = result.embeddings[list(rows)] if len(rows) else np.zeros((0, 0), dtype=np.float32)
    return GetResult(
        ids=[result.ids[i] for i in rows],
        embeddings=embeddings,
        documents=column(result.documents, "documents"),
        metadatas=column(result.metadatas, "metadatas"),
        uris=column(result.uris, "uris"),
        included=list(include),
    )

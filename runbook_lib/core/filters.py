"""Chroma's ``where`` filter language translated to a Qdrant :class:`~qdrant_client.models.Filter`.

Keys address the user metadata, which the migration nests under ``payload["metadata"]`` (SPEC "Data
mapping"), so ``{"page": 3}`` filters on the payload path ``metadata.page``.

The translation mirrors what chromadb 1.5.9 does, checked record by record against a real Chroma
collection in ``tests/test_vector_db.py``:

* **Validation** follows ``chromadb.api.types.validate_where``: one key per expression, ``$and`` /
  ``$or`` take a list of at least two expressions, one operator per operator expression,
  ``$gt``/``$gte``/``$lt``/``$lte`` take a number, ``$in``/``$nin`` a non-empty list of one type.
  Anything else raises :class:`~runbook_lib.errors.ConfigError` naming what is wrong. ``{}`` is
  "no filter".
* **Missing keys**: ``$ne``, ``$nin`` and ``$not_contains`` *match* records that lack the key
  (and records with no metadata at all); ``$eq``, ``$in``, ``$gt``... do not. Qdrant's ``must_not``
  has the same behaviour; ``MatchExcept`` does not (it skips records without the key), so it is not used.
* **Numbers**: an int and a float are equal when their values are (``{"page": 3}`` matches
  ``page: 3.0`` and ``{"page": 3.0}`` matches ``page: 3``). Qdrant's exact match keeps ints and
  floats apart (and takes no floats), so numeric equality becomes ``Range(gte=v, lte=v)``.
  Integers from 2^53 up match exactly (``MatchValue``): a float range there would also match neighbours. Qdrant
  compares ranges in floats, so a range bound from 2^53 up also takes the integers that round to the bound's float
  and lie on its side (listed: a few hundred at most) -- checked on the engine in ``tests/test_engine_filters.py``.
* **Float operands** are compared as Chroma compares them: chromadb 1.5 parses a ``where`` float with a
  parser that lands about one value in ten 1 ulp off, and stores float metadata through the same parser
  (:mod:`runbook_lib.core.chroma_floats`), so every float operand becomes :func:`chroma_float` of itself here
  and ``{"v": x}``, ``$lt``/``$gte`` at ``x``... select the same records from the migrated copy as from Chroma.
* **Booleans** are their own type: ``{"flag": True}`` does not match ``flag: 1`` and ``{"flag": 1}``
  does not match ``flag: True``; ranges never match booleans (Chroma rejects boolean range operands).
* **Strings** never equal numbers: ``{"page": "3"}`` matches nothing stored as a number.
* **List-valued metadata** (chromadb 1.x): the scalar operators (``$eq``, ``$ne``, ``$in``, ``$nin``,
  ``$gt``...) see only scalar values, so a record whose key holds ``["a", "b"]`` does not match
  ``{"key": "a"}`` (and does match ``{"key": {"$ne": "a"}}``); ``$contains`` / ``$not_contains`` see
  only lists and compare element types strictly (``$contains: 1`` matches ``[1, 2]`` but not
  ``[1.0, 2.5]``). Qdrant flattens arrays when it matches a path, so each scalar condition on
  ``metadata.k`` carries a ``must_not`` twin on ``metadata.k[]`` (the array elements only; a scalar
  has none), and ``$contains`` matches on ``metadata.k[]``.
* Keys beginning with ``#`` (``#document``, ``#id``...) are Chroma's own fields, not metadata, and are
  refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from qdrant_client import models

from runbook_lib.core.chroma_floats import chroma_float
from runbook_lib.core.mapping import PAYLOAD_METADATA_KEY
from runbook_lib.errors import ConfigError

#: Field operators Chroma supports, all translated.
FIELD_OPERATORS: tuple[str, ...] = (
    "$eq",
    "$ne",
    "$gt",
    "$gte",
    "$lt",
    "$lte",
    "$in",
    "$nin",
    "$contains",
    "$not_contains",
)
#: Logical operators Chroma supports, both translated.
LOGICAL_OPERATORS: tuple[str, ...] = ("$and", "$or")

_RANGE_OPERATORS = {"$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}
_UNQUOTED_KEY = re.compile(r"^[A-Za-z0-9_-]+$")

Scalar = str | int | float | bool


def payload_path(key: str, *, flat: bool = False) -> str:
    """The Qdrant payload path of a Chroma metadata key: ``metadata.<key>`` (``<key>`` in a flat payload layout,
    e.g. ``llamaindex``), quoted when needed.

    Qdrant's JSON path syntax reads ``a.b`` as a nested key, so any key outside ``[A-Za-z0-9_-]``
    is quoted (``metadata."a.b"``). A quoted key cannot contain ``"`` or ``\\``.
    """
    prefix = "" if flat else f"{PAYLOAD_METADATA_KEY}."
    if _UNQUOTED_KEY.match(key):
        return f"{prefix}{key}"
    if '"' in key or "\\" in key:
        raise ConfigError(
            f"The where filter uses the metadata key {key!r}, which Qdrant cannot address: a payload key "
            'used in a filter cannot contain a double quote (") or a backslash; rename that metadata key.'
        )
    return f'{prefix}"{key}"'


def to_qdrant_filter(where: Mapping[str, Any], *, flat: bool = False) -> models.Filter:
    """Translate a Chroma ``where`` filter; raise :class:`ConfigError` for anything Chroma would refuse
    or this translation does not support (the message names the operator or key). ``flat``: the metadata keys are
    at the top level of the payload (the ``llamaindex`` payload layout)."""
    if not isinstance(where, Mapping):
        raise ConfigError(f"A where filter must be a dict such as {{'source': 'web'}}, got {type(where).__name__}.")
    if len(where) == 0:
        return models.Filter()
    return _expression(where, flat)


# --- expressions ---------------------------------------------------------------------------------
def _expression(where: Any, flat: bool = False) -> models.Filter:
    if not isinstance(where, Mapping):
        raise ConfigError(f"Each where expression must be a dict such as {{'source': 'web'}}, got {where!r}.")
    if len(where) != 1:
        raise ConfigError(
            f"A where expression must have exactly one key, got {sorted(map(str, where))}: combine "
            "conditions with {'$and': [{...}, {...}]}."
        )
    ((key, value),) = where.items()
    if not isinstance(key, str):
        raise ConfigError(f"A where key must be a string, got {key!r}.")
    if key in LOGICAL_OPERATORS:
        return _logical(key, value, flat)
    if key.startswith("$"):
        raise ConfigError(
            f"Unsupported where operator {key!r} at the top of an expression: use a metadata key, or one of "
            f"{', '.join(LOGICAL_OPERATORS)}."
        )
    if key.startswith("#"):
        raise ConfigError(
            f"The where key {key!r} is one of Chroma's own fields, not metadata: the Qdrant wrapper filters "
            "on metadata keys only."
        )
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise ConfigError(
                f"The condition on {key!r} must have exactly one operator, got {sorted(map(str, value))}: "
                "combine conditions with $and."
            )
        ((operator, operand),) = value.items()
        return _field(key, operator, operand, flat)
    return _field(key, "$eq", value, flat)


def _logical(operator: str, value: Any, flat: bool = False) -> models.Filter:
    if not isinstance(value, list) or len(value) < 2:
        raise ConfigError(
            f"{operator} takes a list of at least two where expressions, got {value!r}: "
            "with a single condition, use it without the operator."
        )
    parts: list[models.Condition] = [_expression(item, flat) for item in value]
    return models.Filter(must=parts) if operator == "$and" else models.Filter(should=parts)


def _field(key: str, operator: Any, operand: Any, flat: bool = False) -> models.Filter:
    if operator not in FIELD_OPERATORS:
        raise ConfigError(
            f"Unsupported where operator {operator!r} on key {key!r}: use one of {', '.join(FIELD_OPERATORS)}."
        )
    path = payload_path(key, flat=flat)
    if operator == "$eq":
        return _scalar_in(path, [_scalar(key, operator, operand)])
    if operator == "$ne":
        return models.Filter(must_not=[_scalar_in(path, [_scalar(key, operator, operand)])])
    if operator in _RANGE_OPERATORS:
        number = _number(key, operator, operand)
        return _scalar_only(path, lambda p: _compare(p, operator, number))
    if operator in ("$in", "$nin"):
        values = _scalar_list(key, operator, operand)
        condition = _scalar_in(path, values)
        return condition if operator == "$in" else models.Filter(must_not=[condition])
    # $contains / $not_contains: elements of list-valued metadata, types compared strictly.
    contains = _contains(path, _scalar(key, operator, operand))
    return contains if operator == "$contains" else models.Filter(must_not=[contains])


# --- conditions ----------------------------------------------------------------------------------
def _scalar_only(path: str, condition: Callable[[str], models.Condition]) -> models.Filter:
    """``condition`` holds for a scalar value at ``path``: it holds on the path and not on its array
    elements (``path[]`` selects the elements of a list and nothing for a scalar)."""
    return models.Filter(must=[condition(path)], must_not=[condition(f"{path}[]")])


def _scalar_in(path: str, values: list[Scalar]) -> models.Filter:
    """The value at ``path`` is a scalar equal to one of ``values`` (all of one type)."""
    return _scalar_only(path, lambda p: _equals_any(p, values))


def _equals_any(path: str, values: list[Scalar]) -> models.Condition:
    """Some value selected by ``path`` equals one of ``values`` with Chroma's typing rules."""
    if all(isinstance(v, str) for v in values):
        if len(values) == 1:
            return models.FieldCondition(key=path, match=models.MatchValue(value=values[0]))
        return models.FieldCondition(key=path, match=models.MatchAny(any=[str(v) for v in values]))
    conditions = [_equals(path, v) for v in values]
    return conditions[0] if len(conditions) == 1 else models.Filter(should=conditions)


#: From this magnitude up not every integer is a float: a range (float bounds) would match neighbours too.
EXACT_FLOAT_INT = 2**53
_INT64 = (-(2**63), 2**63 - 1)


def _compare(path: str, operator: str, number: float | int) -> models.Condition:
    """The value at ``path`` compares with ``number`` as Chroma compares them (``$gt``, ``$gte``, ``$lt``, ``$lte``)."""
    bound = _RANGE_OPERATORS[operator]
    if not isinstance(number, int) or abs(number) < EXACT_FLOAT_INT:
        return models.FieldCondition(key=path, range=models.Range(**{bound: number}))
    # Qdrant compares floats: float(v) > float(n) implies v > n, and the integers v with float(v) == float(n) are
    # listed by which side of n they lie on. (A float stored at float(n) itself is not matched, as for equality.)
    rounded = float(number)
    strict = models.Range(**{"gt" if bound in ("gt", "gte") else "lt": rounded})
    spread = int(math.ulp(rounded))
    same_float = [v for v in range(int(rounded) - spread, int(rounded) + spread + 1) if float(v) == rounded]
    side = {
        "gt": [v for v in same_float if v > number],
        "gte": [v for v in same_float if v >= number],
        "lt": [v for v in same_float if v < number],
        "lte": [v for v in same_float if v <= number],
    }[bound]
    side = [v for v in side if _INT64[0] <= v <= _INT64[1]]  # Chroma's integers are 64-bit
    conditions: list[models.Condition] = [models.FieldCondition(key=path, range=strict)]
    if side:
        conditions.append(models.FieldCondition(key=path, match=models.MatchAny(any=side)))
    return models.Filter(should=conditions)


def _equals(path: str, value: Scalar) -> models.FieldCondition:
    if isinstance(value, bool | str):
        return models.FieldCondition(key=path, match=models.MatchValue(value=value))
    if isinstance(value, int) and abs(value) >= EXACT_FLOAT_INT:
        # Exact integer match: Range(gte=v, lte=v) would round v to a float and also match v +/- 1. (A float
        # stored at this magnitude is not matched; Chroma metadata of that size is integers in practice.)
        return models.FieldCondition(key=path, match=models.MatchValue(value=value))
    # ints and floats compare by value (3 == 3.0), which only a range expresses in Qdrant.
    return models.FieldCondition(key=path, range=models.Range(gte=value, lte=value))


def _contains(path: str, value: Scalar) -> models.Filter:
    """A list at ``path`` has an element equal to ``value`` of the same type (Chroma lists hold one type)."""
    elements = f"{path}[]"
    if isinstance(value, bool | str | int):
        return models.Filter(must=[models.FieldCondition(key=elements, match=models.MatchValue(value=value))])
    # A float element: the range also matches integer elements of the same value, which Chroma does
    # not count; an integer list holding that value is excluded by exact (type-strict) integer match.
    must_not: list[models.Condition] = []
    if value.is_integer() and _INT64[0] <= int(value) <= _INT64[1]:  # Chroma's integers are 64-bit
        must_not.append(models.FieldCondition(key=elements, match=models.MatchValue(value=int(value))))
    return models.Filter(
        must=[models.FieldCondition(key=elements, range=models.Range(gte=value, lte=value))],
        must_not=must_not or None,
    )


# --- operand checks ------------------------------------------------------------------------------
def _scalar(key: str, operator: str, operand: Any) -> Scalar:
    """A checked operand; a float as Chroma compares it (:func:`chroma_float`)."""
    if isinstance(operand, float):
        if not math.isfinite(operand):
            raise ConfigError(
                f"The where condition {operator} on {key!r} compares with {operand!r}: use a finite number."
            )
        return chroma_float(operand)
    if isinstance(operand, str | bool | int):
        return operand
    raise ConfigError(
        f"The where condition {operator} on {key!r} needs a string, number or boolean, got {operand!r}"
        + (": use $in for a list of values." if isinstance(operand, list | tuple) else ".")
    )


def _number(key: str, operator: str, operand: Any) -> float | int:
    if isinstance(operand, bool) or not isinstance(operand, int | float):
        raise ConfigError(f"The where condition {operator} on {key!r} needs a number, got {operand!r}.")
    return _scalar(key, operator, operand)  # type: ignore[return-value]


def _scalar_list(key: str, operator: str, operand: Any) -> list[Scalar]:
    if not isinstance(operand, list) or not operand:
        raise ConfigError(f"The where condition {operator} on {key!r} needs a non-empty list, got {operand!r}.")
    values = [_scalar(key, operator, v) for v in operand]
    first = type(values[0])
    if any(type(v) is not first for v in values):
        raise ConfigError(
            f"The where condition {operator} on {key!r} needs values all of one type (Chroma does not mix "
            f"str, int, float and bool in one list), got {operand!r}."
        )
    return values

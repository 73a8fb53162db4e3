"""qdrant-client's ``models.Filter`` as a Qdrant Edge filter: the same conditions, one for one.

Edge evaluates them with the server's own code, so a filter means what it means on a server. Conditions the
runbook never builds and Edge 0.9 spells differently (geo areas, slices) are refused in one sentence.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from runbook_lib.errors import ConfigError

__all__ = ["to_edge_filter"]


def to_edge_filter(query_filter: models.Filter | None) -> qe.Filter | None:
    """The Edge filter for ``query_filter`` (None stays None); :class:`ConfigError` for a condition Edge lacks."""
    return None if query_filter is None else _filter(query_filter)


def _filter(f: models.Filter) -> qe.Filter:
    min_should = None
    if f.min_should is not None:
        min_should = qe.MinShould(conditions=_conditions(f.min_should.conditions), min_count=f.min_should.min_count)
    return qe.Filter(
        must=_conditions(f.must),
        should=_conditions(f.should),
        must_not=_conditions(f.must_not),
        min_should=min_should,
    )


def _conditions(conditions: Sequence[models.Condition] | models.Condition | None) -> list[Any] | None:
    if conditions is None:
        return None
    items = conditions if isinstance(conditions, list) else [conditions]
    return [_condition(c) for c in items]


def _condition(c: models.Condition) -> Any:
    if isinstance(c, models.Filter):
        return _filter(c)
    if isinstance(c, models.FieldCondition):
        return _field(c)
    if isinstance(c, models.HasIdCondition):
        return qe.HasIdCondition(point_ids={i if isinstance(i, int) else str(i) for i in c.has_id})
    if isinstance(c, models.IsEmptyCondition):
        return qe.IsEmptyCondition(key=c.is_empty.key)
    if isinstance(c, models.IsNullCondition):
        return qe.IsNullCondition(key=c.is_null.key)
    if isinstance(c, models.HasVectorCondition):
        return qe.HasVectorCondition(vector=c.has_vector)
    if isinstance(c, models.NestedCondition):
        return qe.NestedCondition(key=c.nested.key, filter=_filter(c.nested.filter))
    raise _unsupported(f"a {type(c).__name__}")


def _field(c: models.FieldCondition) -> qe.FieldCondition:
    if c.geo_bounding_box is not None or c.geo_radius is not None or c.geo_polygon is not None:
        raise _unsupported(f"a geo condition on {c.key!r}")
    values_count = None
    if c.values_count is not None:
        vc = c.values_count
        values_count = qe.ValuesCount(lt=vc.lt, gt=vc.gt, lte=vc.lte, gte=vc.gte)
    return qe.FieldCondition(
        key=c.key,
        match=None if c.match is None else _match(c.match),
        range=None if c.range is None else _range(c.range),
        values_count=values_count,
        is_empty=c.is_empty,
        is_null=c.is_null,
    )


def _match(m: models.Match) -> Any:
    if isinstance(m, models.MatchValue):
        # qdrant-edge-py 0.9 reads a Python bool as the integer 0 or 1 (True would match 1, not true); a NumPy
        # bool is read as a boolean.
        return qe.MatchValue(np.bool_(m.value) if isinstance(m.value, bool) else m.value)
    if isinstance(m, models.MatchAny):
        return qe.MatchAny(list(m.any))
    if isinstance(m, models.MatchExcept):
        return qe.MatchExcept(list(m.except_))
    if isinstance(m, models.MatchText):
        return qe.MatchText(m.text)
    if isinstance(m, models.MatchTextAny):
        return qe.MatchTextAny(m.text_any)
    if isinstance(m, models.MatchPhrase):
        return qe.MatchPhrase(m.phrase)
    if isinstance(m, models.MatchPrefix):
        return qe.MatchPrefix(m.prefix)
    if isinstance(m, models.MatchSubstring):
        return qe.MatchSubstring(m.substring)
    raise _unsupported(f"a {type(m).__name__}")


def _range(r: models.Range | models.DatetimeRange) -> Any:
    if isinstance(r, models.DatetimeRange):
        return qe.RangeDateTime(gte=_iso(r.gte), gt=_iso(r.gt), lte=_iso(r.lte), lt=_iso(r.lt))
    return qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)


def _iso(value: datetime | date | None) -> str | None:
    return None if value is None else value.isoformat()


def _unsupported(what: str) -> ConfigError:
    return ConfigError(
        f"Qdrant Edge cannot evaluate {what} in a filter here: filter with match, range, id, emptiness or nested "
        "conditions, or use a Qdrant server via QDRANT_URL."
    )

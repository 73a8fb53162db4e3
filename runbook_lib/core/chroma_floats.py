"""The float chromadb 1.5 stores for a float metadata value, and compares a float ``where`` operand as.

What chromadb 1.5.9 does (read in its Python side, measured with a real ``PersistentClient``):

* A ``where`` filter crosses into the Rust core as text: ``chromadb/api/rust.py`` sends
  ``json.dumps(where)``, i.e. each float as Python's shortest round-trip ``repr``, and the core parses it
  with ``serde_json`` built without its ``float_roundtrip`` feature. That parser reads the decimal digits
  into a ``u64`` significand ``s`` and a decimal exponent ``e`` and returns ``float(s) * 10**e`` (or
  ``/ 10**-e``) computed in f64: two roundings, so about one value in ten lands 1 ulp from the correctly
  rounded one (``0.9739536643028259`` becomes ``0.973953664302826``).
* Metadata values take the same road on write (the record is serialised to JSON and parsed back by the
  same parser before it reaches SQLite's ``REAL`` column), so a stored float is that same function of the
  value written. Nothing is stored as float32; integers, strings and booleans are untouched.
* Measured: 6,006 random floats (uniform in [0, 1), in +-1e6, and across exponents 1e-300..1e300, plus
  the subnormal and extreme values) written and read back: 975 came back changed, each by exactly 1 ulp,
  and every one of the 6,006 equals :func:`chroma_float` of the value written; ``$eq`` and ``$lt`` with the
  written values, and ``$eq`` with the values read back, select exactly the records :func:`chroma_float`
  predicts. The function is not idempotent: for about 3% of stored values ``v``, ``chroma_float(v) != v``,
  so Chroma's own ``{"k": v}`` with a value it returned misses that record; the app layer answers the same.

So Chroma agrees with itself, and after a migration (which copies the stored value) the app's Qdrant
filters must shift their float operands the same way (:mod:`runbook_lib.core.filters`) and its Qdrant
writes must store the shifted value (:func:`chroma_metadata`), or exact matches and range bounds at a
value the app wrote flip. The other way, a value copied from a store into Chroma (a replay, a rollback) is
written as its :func:`chroma_preimage`, or Chroma would shift the ~3% it does not keep and the copy would drift.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

#: serde_json's table of exact powers of ten (Rust float literals are correctly rounded, as Python's are).
_POW10: tuple[float, ...] = tuple(float(f"1e{i}") for i in range(309))
#: How many ulps either side :func:`chroma_preimage` looks.
_PREIMAGE_ULPS = 4
_REPR = re.compile(r"(-?)(\d+)(?:\.(\d+))?(?:e([+-]\d+))?")


def chroma_float(value: float) -> float:
    """``value`` as chromadb 1.5 stores it and compares it in a ``where``: its ``repr`` parsed by serde_json's
    default (not correctly rounded) float parser. Non-finite values are returned as they are (Chroma refuses them).
    """
    if not math.isfinite(value):
        return value
    match = _REPR.fullmatch(repr(float(value)))
    if match is None:  # pragma: no cover - repr of a finite float always matches
        raise ValueError(f"unexpected float repr {value!r}")
    sign, integer, fraction, exponent_text = match.groups()
    fraction = fraction or ""
    # A shortest repr has at most 17 significant digits, so the significand fits serde_json's u64 unrounded.
    result = float(int(integer + fraction))
    exponent = int(exponent_text or 0) - len(fraction)
    while True:
        if abs(exponent) < len(_POW10):
            result = result * _POW10[exponent] if exponent >= 0 else result / _POW10[-exponent]
            break
        if result == 0.0:
            break
        result /= 1e308  # serde_json's step for exponents below -308 (large positive ones are out of range)
        exponent += 308
    return -result if sign else result


def chroma_preimage(value: float) -> float:
    """A float Chroma stores as exactly ``value`` (``chroma_float(result) == value``): ``value`` itself or the
    nearest neighbour that does, which exists for every value Chroma returned (it stored it from a value a few ulps
    away at most: 1 ulp, or 2 where serde_json divides by a power of ten above 1e22, which is itself rounded). For a
    value Chroma cannot store exactly, ``value`` itself."""
    if not math.isfinite(value) or chroma_float(value) == value:
        return value
    up = down = value
    for _ in range(_PREIMAGE_ULPS):
        up, down = math.nextafter(up, math.inf), math.nextafter(down, -math.inf)
        for candidate in (up, down):
            if chroma_float(candidate) == value:
                return candidate
    return value


def chroma_value(value: Any) -> Any:
    """A metadata value as Chroma stores it: floats (also in lists) through :func:`chroma_float`."""
    if isinstance(value, float):
        return chroma_float(value)
    if isinstance(value, list):
        return [chroma_float(v) if isinstance(v, float) else v for v in value]
    return value


def chroma_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """``metadata`` with every value as Chroma stores it (None stays None)."""
    if metadata is None:
        return None
    return {key: chroma_value(value) for key, value in metadata.items()}


def metadata_chroma_stores_as(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What to write to Chroma so it stores ``metadata`` (values read from a store) exactly: every float through
    :func:`chroma_preimage` (None stays None)."""
    if metadata is None:
        return None
    return {key: _preimage_value(value) for key, value in metadata.items()}


def _preimage_value(value: Any) -> Any:
    if isinstance(value, float):
        return chroma_preimage(value)
    if isinstance(value, list):
        return [chroma_preimage(v) if isinstance(v, float) else v for v in value]
    return value


def metadata_chroma_reads_back(metadata: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What Chroma holds after ``metadata`` is written the way a copy into Chroma writes it
    (:func:`metadata_chroma_stores_as`): ``metadata`` itself for every value Chroma can store exactly, else the
    float Chroma makes of the written one. The rule a read-back of such a copy is checked against."""
    return chroma_metadata(metadata_chroma_stores_as(metadata))

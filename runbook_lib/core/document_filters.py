"""Chroma's ``where_document`` filter: an exact predicate over the document text, and a Qdrant prefilter.

The language (chromadb 1.5, ``chromadb.api.types.validate_where_document``): one operator per expression,
``$contains`` / ``$not_contains`` / ``$regex`` / ``$not_regex`` with a non-empty string, ``$and`` / ``$or`` with a
list of at least two expressions. What Chroma answers, measured with a real ``PersistentClient``
(``tests/test_document_filters.py`` compares every answer with it):

* ``$contains`` is a case-sensitive substring test (``%`` and ``_`` are plain characters); ``$regex`` is a search
  (not a full match) with Rust's ``regex`` crate.
* A record without a document never matches ``$contains`` or ``$regex`` and always matches ``$not_contains`` and
  ``$not_regex``; the empty document ``""`` is a document (``^$`` matches it).

:func:`document_predicate` answers exactly that in Python. ``$regex`` patterns are translated from Rust's dialect
to Python's ``re`` where both mean the same (literals, ``.``, classes of characters and ranges, groups,
alternation, greedy and lazy repetition, ``^``/``$``/``\\A``/``\\z`` anchors, the ``s`` flag); anything else is
refused in one sentence (:class:`~runbook_lib.errors.ConfigError`) rather than answered approximately: look-around
and backreferences (Rust has none), possessive or stacked repetition, Python's ``\\Z``, the ``i``/``m``/``x``/``U``/
``u``/``R`` flags, ``\\d``/``\\w``/``\\s``/``\\b`` and Unicode classes (their Unicode tables differ between the two
engines), POSIX and nested classes.

:func:`to_qdrant_prefilter` is a Qdrant condition on the document's payload path that every true match satisfies:
``$contains`` is ``MatchSubstring`` (byte-wise and case-sensitive, so exact), ``$not_contains`` its ``must_not``,
``$regex`` the ``MatchSubstring`` of each run of literal characters every match contains (``ab+c`` needs ``ab``
and ``bc``), ``$not_regex`` nothing. It only narrows what is read: the predicate decides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from qdrant_client import models

from runbook_lib.errors import ConfigError

TEXT_OPERATORS: tuple[str, ...] = ("$contains", "$not_contains", "$regex", "$not_regex")
LOGICAL_OPERATORS: tuple[str, ...] = ("$and", "$or")
#: The largest counted repetition accepted (Rust refuses patterns whose compiled size passes its limit).
MAX_REPETITION = 1000

DocumentPredicate = Callable[[str | None], bool]

_META = set("\\.+*?()|[]{}^$#&-~")
_CONTROL_ESCAPES = {"a": "\a", "f": "\f", "t": "\t", "n": "\n", "r": "\r", "v": "\v"}
_CLASS_HINTS = {
    "d": "[0-9]",
    "D": "[^0-9]",
    "w": "[0-9A-Za-z_]",
    "W": "[^0-9A-Za-z_]",
    "s": "[ \\t\\n\\r]",
    "S": "[^ \\t\\n\\r]",
}


def validate_where_document(where_document: Mapping[str, Any]) -> None:
    """Raise :class:`ConfigError` unless ``where_document`` is a filter :func:`document_predicate` answers."""
    document_predicate(where_document)


def document_predicate(where_document: Mapping[str, Any]) -> DocumentPredicate:
    """The exact test Chroma applies to each record's document (None: the record has none)."""
    if not isinstance(where_document, Mapping):
        raise ConfigError(
            "A where_document filter must be a dict such as {'$contains': 'word'}, got "
            f"{type(where_document).__name__}."
        )
    if len(where_document) != 1:
        raise ConfigError(
            f"A where_document expression must have exactly one operator, got {sorted(map(str, where_document))}: "
            "combine conditions with {'$and': [{...}, {...}]}."
        )
    ((operator, operand),) = where_document.items()
    if operator in LOGICAL_OPERATORS:
        if not isinstance(operand, list) or len(operand) < 2:
            raise ConfigError(
                f"{operator} in where_document takes a list of at least two expressions, got {operand!r}: with a "
                "single condition, use it without the operator."
            )
        parts = [document_predicate(item) for item in operand]
        if operator == "$and":
            return lambda document: all(part(document) for part in parts)
        return lambda document: any(part(document) for part in parts)
    if operator not in TEXT_OPERATORS:
        raise ConfigError(
            f"Unsupported where_document operator {operator!r}: use one of "
            f"{', '.join(TEXT_OPERATORS + LOGICAL_OPERATORS)}."
        )
    if not isinstance(operand, str) or operand == "":
        raise ConfigError(f"The where_document operator {operator} needs a non-empty string, got {operand!r}.")
    if operator in ("$contains", "$not_contains"):
        found: DocumentPredicate = lambda document: document is not None and operand in document  # noqa: E731
    else:
        compiled = python_regex(operand)
        found = lambda document: document is not None and compiled.search(document) is not None  # noqa: E731
    if operator.startswith("$not_"):
        return lambda document: not found(document)
    return found


def to_qdrant_prefilter(where_document: Mapping[str, Any], document_path: str | None) -> models.Filter | None:
    """A Qdrant filter every record matching ``where_document`` passes (None: nothing to narrow by), on the payload
    key holding the document; ``document_path`` None (the text is not a plain payload string) gives None."""
    validate_where_document(where_document)
    if document_path is None:
        return None
    condition = _prefilter(where_document, document_path)
    if condition is None or isinstance(condition, models.Filter):
        return condition
    return models.Filter(must=[condition])


def _prefilter(expression: Mapping[str, Any], path: str) -> models.Filter | models.FieldCondition | None:
    ((operator, operand),) = expression.items()
    if operator in LOGICAL_OPERATORS:
        parts = [_prefilter(item, path) for item in operand]
        if operator == "$and":
            kept = [p for p in parts if p is not None]
            return models.Filter(must=kept) if kept else None
        if any(p is None for p in parts):  # one branch unconstrained: so is the disjunction
            return None
        return models.Filter(should=parts)  # type: ignore[arg-type]
    if operator in ("$contains", "$not_contains"):
        substring = models.FieldCondition(key=path, match=models.MatchSubstring(substring=operand))
        return substring if operator == "$contains" else models.Filter(must_not=[substring])
    if operator == "$regex":  # every match contains the pattern's mandatory literal runs
        runs = required_substrings(operand)
        if runs:
            return models.Filter(
                must=[models.FieldCondition(key=path, match=models.MatchSubstring(substring=r)) for r in runs]
            )
    return None


# --- Rust regex -> Python re ------------------------------------------------------------------------------
def required_substrings(pattern: str) -> list[str]:
    """Substrings every match of ``pattern`` (Rust ``regex`` syntax) contains: its mandatory literal runs."""
    translator = _RegexTranslator(pattern)
    translator.translate()
    return translator.required


def python_regex(pattern: str) -> re.Pattern[str]:
    """``pattern`` (Rust ``regex`` syntax) compiled by Python's ``re`` with the same meaning, or
    :class:`ConfigError` naming the construct the two engines do not share."""
    translated = _RegexTranslator(pattern).translate()
    try:
        return re.compile(translated)
    except re.error as exc:
        raise ConfigError(f"The where_document $regex {pattern!r} is not a valid pattern: {exc}.") from None


def _minimum(quantifier: str) -> int:
    """How many times a quantifier repeats its atom at least (1 for none)."""
    if not quantifier:
        return 1
    if quantifier[0] == "+":
        return 1
    if quantifier[0] == "{":
        return int(quantifier[1:].split(",")[0].rstrip("}?"))
    return 0  # *, ?


class _RegexTranslator:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.pos = 0
        self.required: list[str] = []
        self.ignore_case = False  # Rust's (?i): on from the flag to the end of the enclosing group

    # --- entry and errors ---
    def translate(self) -> str:
        """The Python pattern; :attr:`required` is then the substrings every match contains."""
        dotall = False
        if self.pattern.startswith("(?s)"):
            self.pos, dotall = 4, True
        body, self.required = self._alternation()
        if self.pos != len(self.pattern):  # an unmatched ")"
            self._refuse("has an unmatched ')'")
        return f"(?s:{body})" if dotall else body

    def _refuse(self, why: str) -> None:
        raise ConfigError(
            f"The where_document $regex {self.pattern!r} {why} (at position {self.pos}): this wrapper answers only "
            "patterns that mean the same in Chroma's Rust regex and in Python; rewrite it without that construct."
        )

    def _peek(self, offset: int = 0) -> str | None:
        index = self.pos + offset
        return self.pattern[index] if index < len(self.pattern) else None

    # --- grammar ---
    def _alternation(self) -> tuple[str, list[str]]:
        """The translated alternation, and the substrings every match of it contains (none for several branches)."""
        branches = [self._sequence()]
        while self._peek() == "|":
            self.pos += 1
            branches.append(self._sequence())
        return "|".join(text for text, _ in branches), branches[0][1] if len(branches) == 1 else []

    def _sequence(self) -> tuple[str, list[str]]:
        """The translated sequence, and its runs of mandatory adjacent literal characters."""
        out: list[str] = []
        runs: list[str] = []
        run = ""
        while (char := self._peek()) is not None and char not in "|)":
            atom, repeatable, literal = self._atom()
            quantifier = self._quantifier() if repeatable else self._no_quantifier()
            out.append(atom + quantifier)
            at_least = _minimum(quantifier)
            if literal is not None and at_least >= 1:
                run += literal
                if quantifier:  # the repetitions end the run; the last one starts the next
                    runs.append(run)
                    run = literal
            else:
                runs.append(run)
                run = ""
        runs.append(run)
        return "".join(out), [r for r in runs if r]

    def _atom(self) -> tuple[str, bool, str | None]:
        """(translated atom, whether it may be repeated, the character it matches when it is a literal)."""
        char = self.pattern[self.pos]
        flag = re.match(r"\(\?(-?)i\)", self.pattern[self.pos :])
        if flag:  # (?i) / (?-i): case-insensitive (or not) until the end of the enclosing group
            self.pos += flag.end()
            self.ignore_case = not flag[1]
            return "", False, None
        if char == "(":
            return self._group(), True, None
        if char == "[":
            return self._class(), True, None
        if char in "*+?{":
            self._refuse(f"repeats nothing with {char!r}")
        if char == "^":
            self.pos += 1
            return r"\A", False, None
        if char == "$":
            self.pos += 1
            return r"\Z", False, None
        if char == ".":
            self.pos += 1
            return ".", True, None
        if char == "\\":
            return self._escape()
        self.pos += 1
        return self._literal(char)

    def _literal(self, char: str) -> tuple[str, bool, str | None]:
        """A literal atom: a required character, or under (?i) Python's scoped case-insensitive match of it (both
        engines fold by Unicode simple case folding), which no case-sensitive prefilter may require."""
        if self.ignore_case:
            return f"(?i:{re.escape(char)})", True, None
        return re.escape(char), True, char

    def _group(self) -> str:
        self.pos += 1  # "("
        prefix = "("
        outer = self.ignore_case
        if self._peek() == "?":
            rest = self.pattern[self.pos :]
            named = re.match(r"\?P?<([A-Za-z_][A-Za-z0-9_]*)>", rest)
            if rest.startswith("?:"):
                self.pos += 2
                prefix = "(?:"
            elif named:
                self.pos += named.end()
                prefix = "(?:"
            elif rest.startswith(("?=", "?!", "?<=", "?<!")):
                self._refuse("uses look-around, which Chroma's Rust regex does not support")
            elif rest.startswith(("?i:", "?-i:")):
                self.ignore_case = rest.startswith("?i:")
                self.pos += 3 if self.ignore_case else 4
                prefix = "(?:"
            elif rest.startswith(("?s:", "?-s:")):
                flag = "?s:" if rest.startswith("?s:") else "?-s:"
                self.pos += len(flag)
                prefix = f"({flag}"
            else:
                self._refuse(
                    "uses an inline flag or group syntax other than (?:...), (?P<name>...), (?i), (?-i), (?i:...) "
                    "and (?s:...)"
                )
        body, _ = self._alternation()
        if self._peek() != ")":
            self._refuse("has an unclosed group")
        self.pos += 1
        self.ignore_case = outer
        return f"{prefix}{body})"

    def _quantifier(self) -> str:
        char = self._peek()
        if char is None or char not in "*+?{":
            return ""
        if char == "{":
            found = re.match(r"\{(\d+)(,(\d*))?\}", self.pattern[self.pos :])
            if found is None:
                self._refuse("has a '{' that is not a counted repetition {n}, {n,} or {n,m} (escape it as \\{)")
            assert found is not None
            low, high = int(found[1]), int(found[3]) if found[3] else None
            if max(low, high or 0) > MAX_REPETITION:
                self._refuse(f"repeats more than {MAX_REPETITION} times")
            if high is not None and high < low:
                self._refuse("has a counted repetition whose maximum is below its minimum")
            text = found[0]
            self.pos += found.end()
        else:
            text = char
            self.pos += 1
        if self._peek() == "?":
            text += "?"
            self.pos += 1
        if (after := self._peek()) is not None and after in "*+?{":
            self._refuse("repeats a repetition (possessive or stacked quantifiers)")
        return text

    def _no_quantifier(self) -> str:
        if (char := self._peek()) is not None and char in "*+?{":
            self._refuse("repeats an anchor")
        return ""

    def _escape(self) -> tuple[str, bool, str | None]:
        """An escape outside a class: an anchor (not repeatable) or a literal character."""
        if self._peek(1) == "A":
            self.pos += 2
            return r"\A", False, None
        if self._peek(1) == "z":
            self.pos += 2
            return r"\Z", False, None
        return self._literal(self._escaped_char())

    def _escaped_char(self) -> str:
        """The character a backslash escape stands for (outside or inside a class)."""
        self.pos += 1  # "\\"
        char = self._peek()
        if char is None:
            self._refuse("ends with a lone backslash")
        assert char is not None
        self.pos += 1
        if char in _META:
            return char
        if char in _CONTROL_ESCAPES:
            return _CONTROL_ESCAPES[char]
        if char in "xuU":
            return self._code_point(char)
        if char == "Z":
            self._refuse("uses \\Z, which Chroma's Rust regex does not have (its end of text is \\z or $)")
        if char in _CLASS_HINTS:
            self._refuse(
                f"uses \\{char}, whose Unicode meaning differs between Rust and Python (write {_CLASS_HINTS[char]})"
            )
        if char.isdigit():
            self._refuse("uses a backreference or octal escape, which Chroma's Rust regex does not support")
        self._refuse(f"uses the escape \\{char}, which this wrapper does not translate")
        raise AssertionError("unreachable")  # pragma: no cover

    def _code_point(self, kind: str) -> str:
        rest = self.pattern[self.pos :]
        braced = re.match(r"\{([0-9A-Fa-f]{1,8})\}", rest)
        digits = {"x": 2, "u": 4, "U": 8}[kind]
        fixed = re.match(rf"[0-9A-Fa-f]{{{digits}}}", rest)
        found = braced or fixed
        if found is None:
            self._refuse(f"has an incomplete \\{kind} escape")
        assert found is not None
        self.pos += found.end()
        value = int(found[1] if braced else found[0], 16)
        if value > 0x10FFFF or 0xD800 <= value <= 0xDFFF:
            self._refuse(f"escapes {value:#x}, which is not a Unicode scalar value")
        return chr(value)

    def _class(self) -> str:
        self.pos += 1  # "["
        negated = self._peek() == "^"
        if negated:
            self.pos += 1
        items: list[str] = []
        if self._peek() == "]":
            self._refuse("starts a class with ']' (escape it as \\])")
        while True:
            char = self._peek()
            if char is None:
                self._refuse("has an unclosed character class")
            if char == "]":
                self.pos += 1
                break
            if char == "[":
                self._refuse("nests a class or uses a POSIX class such as [:alpha:]")
            if self.pattern.startswith(("&&", "--", "~~", "||"), self.pos):
                self._refuse("uses a class set operation (&&, --, ~~)")
            low = self._class_char()
            if self._peek() == "-" and self._peek(1) not in (None, "]"):
                self.pos += 1
                high = self._class_char()
                if ord(high) < ord(low):
                    self._refuse("has a class range whose end is before its start")
                items.append(f"{re.escape(low)}-{re.escape(high)}")
            else:
                items.append(re.escape(low))
        translated = "[" + ("^" if negated else "") + "".join(items) + "]"
        return f"(?i:{translated})" if self.ignore_case else translated

    def _class_char(self) -> str:
        char = self.pattern[self.pos]
        if char == "\\":
            if self._peek(1) in ("A", "z"):
                self._refuse("uses an anchor inside a character class")
            return self._escaped_char()
        self.pos += 1
        return char

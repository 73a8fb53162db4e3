"""Keeping secrets out of the evidence folder.

Secret values (``QDRANT_API_KEY``, ``CHROMA_AUTH_TOKEN``) are read from the environment only here and in
:mod:`runbook_lib.config.settings`; every text file the runbook writes under ``outputs/`` passes through
:func:`scrub`, which replaces the raw value and the forms it takes once written into JSON, HTML or a URL.
"""

from __future__ import annotations

import html
import json
import os
import re
from urllib.parse import quote

from runbook_lib.config.settings import SECRET_VARIABLES

REDACTED = "***REDACTED***"

#: ``scheme://user:password@host`` -- a credential inside a URL is never written, whatever its value.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<cred>[^\s/@:\"'<>]+:[^\s/@\"'<>]+)@")


def current_secrets() -> list[str]:
    """Secret values present in the environment (read here only to keep them out of files)."""
    return [v for v in (os.environ.get(name) for name in SECRET_VARIABLES) if v and v.strip()]


def secret_forms(value: str) -> set[str]:
    """The ways ``value`` can appear in a written file: raw, URL-quoted, and JSON- or HTML-escaped up to twice
    (a JSON result shown in a notebook is escaped again by the ``.ipynb``, and again by its HTML render)."""
    escapes = (
        lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
        lambda s: json.dumps(s)[1:-1],
        lambda s: html.escape(s, quote=True),
        lambda s: html.escape(s, quote=False),
    )
    forms = {value, quote(value, safe="")}
    for _ in range(2):
        forms |= {escape(form) for form in forms for escape in escapes}
    return {f for f in forms if f}


def scrub(text: str, secret_values: list[str]) -> str:
    """``text`` with every form of every secret value, and every credential inside a URL, replaced."""
    forms = {form for value in secret_values if value for form in secret_forms(value)}
    for form in sorted(forms, key=len, reverse=True):  # longest first: an escaped form contains the raw one
        text = text.replace(form, REDACTED)
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", text)

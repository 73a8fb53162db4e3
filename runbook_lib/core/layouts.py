"""Payload layouts: how a Chroma record (id, document, metadata, uri) is written as a Qdrant payload, and read back.

``runbook`` (default)
    the SPEC layout ``{"chroma_id", "document", "metadata": {...}, "uri"?}``
    (:func:`~runbook_lib.core.mapping.build_payload`).
``langchain``
    what langchain-qdrant's ``QdrantVectorStore`` reads with its defaults (``content_payload_key="page_content"``,
    ``metadata_payload_key="metadata"``): ``{"page_content": str, "metadata": {...}, "chroma_id", "uri"?}``. It
    cannot load a point whose text is null: a null document is refused, or written as ``""`` (and counted) with
    ``null_documents="empty"``.
``llamaindex``
    what llama-index-vector-stores-qdrant reads: the metadata keys flat at the top level with their exact types
    (LlamaIndex's Chroma store already keeps ``_node_content``, ``_node_type``, ``doc_id``, ``document_id`` and
    ``ref_doc_id`` there), ``_node_content`` with the document written into its ``"text"`` (LlamaIndex's Chroma store
    keeps that empty and the text as the Chroma document; its Qdrant store reads the text from ``_node_content``
    only), plus ``chroma_id`` and ``uri``. A record without ``_node_content`` keeps its text under ``text`` (the
    Qdrant store's fallback). A metadata key equal to one of the layout's own keys is refused, naming the key.

Every layout is a lossless round trip: ``from_payload(to_payload(r)) == r`` for every record ``check`` accepts
(a ``None`` metadata reads back as ``{}``, as in the SPEC; a null document mapped to ``""`` reads back as ``""``).
Pure functions, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, get_args

from runbook_lib.config.params import NullDocuments, PayloadLayoutName
from runbook_lib.core.mapping import (
    PAYLOAD_DOCUMENT_KEY,
    PAYLOAD_ID_KEY,
    PAYLOAD_METADATA_KEY,
    PAYLOAD_URI_KEY,
    build_payload,
)
from runbook_lib.errors import ConfigError, MigrationError

LAYOUT_NAMES: tuple[PayloadLayoutName, ...] = get_args(PayloadLayoutName)
DEFAULT_LAYOUT: PayloadLayoutName = "runbook"

LANGCHAIN_CONTENT_KEY = "page_content"
LANGCHAIN_METADATA_KEY = "metadata"
LLAMA_NODE_CONTENT_KEY = "_node_content"
LLAMA_NODE_TYPE_KEY = "_node_type"
LLAMA_TEXT_KEY = "text"

#: A record as the layouts see it: (chroma id, document, metadata, uri).
Record = tuple[str, str | None, dict[str, Any], str | None]


class LayoutError(MigrationError):
    """A record the chosen layout cannot carry (raised before its batch is written; the collection fails)."""


def _node_json(node: Any) -> str:
    """LlamaIndex's own serialisation of ``_node_content`` (``json.dumps(node_dict, ensure_ascii=False)``)."""
    return json.dumps(node, ensure_ascii=False)


@dataclass(frozen=True)
class Layout:
    """The ``runbook`` (SPEC) layout, and what every layout does. ``null_documents`` (a layout whose framework reads
    a string): ``refuse`` a null document (default) or write it as ``""``."""

    null_documents: NullDocuments = "refuse"

    name: ClassVar[PayloadLayoutName] = "runbook"
    #: Metadata keys sit at the payload's top level (filters and payload indexes address them there).
    flat: ClassVar[bool] = False
    #: Where the document's text is in the payload (for a text index), None when it is not a field of its own.
    document_path: ClassVar[str | None] = PAYLOAD_DOCUMENT_KEY
    #: Every record ChromaDB holds can be written (no record needs checking before a migration).
    carries_every_record: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.null_documents not in get_args(NullDocuments):
            raise ConfigError(f"null_documents must be 'refuse' or 'empty', got {self.null_documents!r}.")

    # --- what the layout cannot carry ------------------------------------------------------------------
    def needs_text(self, metadata: Mapping[str, Any] | None) -> bool:
        """Whether a null document cannot be carried (the framework reads a string)."""
        return False

    def substitutes(self, document: str | None, metadata: Mapping[str, Any] | None) -> bool:
        """True when this record's null document is written as ``""`` (to be counted)."""
        return document is None and self.needs_text(metadata) and self.null_documents == "empty"

    def written_documents(self, documents: list[str | None], metadatas: list[Any]) -> list[str | None]:
        """The documents as this layout writes them (a substituted null document is ``""``): what the run's ledger
        fingerprints, so a point read back compares equal to the record it was written from."""
        return ["" if self.substitutes(d, m) else d for d, m in zip(documents, metadatas, strict=True)]

    def check(
        self, chroma_id: str, document: str | None, metadata: Mapping[str, Any] | None, uri: str | None
    ) -> str | None:
        """Why this layout cannot carry the record (one sentence naming the record and the key), or None."""
        if document is None and self.needs_text(metadata) and self.null_documents == "refuse":
            return (
                f"record {chroma_id!r} has no document and the {self.name} layout needs text "
                "(pass null_documents=empty to write it as an empty string)"
            )
        return None

    def require(
        self, chroma_id: str, document: str | None, metadata: Mapping[str, Any] | None, uri: str | None
    ) -> None:
        problem = self.check(chroma_id, document, metadata, uri)
        if problem:
            raise LayoutError(
                f"The {self.name} payload layout cannot carry a record: {problem}; its batch was not written.",
                record=chroma_id,
            )

    def text(self, document: str | None, metadata: Mapping[str, Any] | None) -> str | None:
        """The document as written (a substituted null document is ``""``)."""
        return "" if self.substitutes(document, metadata) else document

    # --- the mapping ---------------------------------------------------------------------------------------
    def to_payload(
        self, chroma_id: str, document: str | None, metadata: Mapping[str, Any] | None, uri: str | None = None
    ) -> dict[str, Any]:
        """The payload of one record (raises :class:`LayoutError` for a record ``check`` refuses)."""
        return build_payload(chroma_id, document, metadata, uri)

    def from_payload(self, payload: Mapping[str, Any]) -> Record:
        """The Chroma record a payload of this layout holds: ``(chroma_id, document, metadata, uri)``."""
        return (
            payload.get(PAYLOAD_ID_KEY),  # type: ignore[return-value]
            payload.get(PAYLOAD_DOCUMENT_KEY),
            dict(payload.get(PAYLOAD_METADATA_KEY) or {}),
            payload.get(PAYLOAD_URI_KEY),
        )


@dataclass(frozen=True)
class LangChainLayout(Layout):
    """``{"page_content", "metadata", "chroma_id", "uri"?}``, what langchain-qdrant's ``QdrantVectorStore`` reads."""

    name: ClassVar[PayloadLayoutName] = "langchain"
    document_path: ClassVar[str | None] = LANGCHAIN_CONTENT_KEY
    carries_every_record: ClassVar[bool] = False

    def needs_text(self, metadata: Mapping[str, Any] | None) -> bool:
        return True

    def to_payload(
        self, chroma_id: str, document: str | None, metadata: Mapping[str, Any] | None, uri: str | None = None
    ) -> dict[str, Any]:
        self.require(chroma_id, document, metadata, uri)
        payload: dict[str, Any] = {
            LANGCHAIN_CONTENT_KEY: self.text(document, metadata),
            LANGCHAIN_METADATA_KEY: dict(metadata) if metadata else {},
            PAYLOAD_ID_KEY: chroma_id,
        }
        if uri is not None:
            payload[PAYLOAD_URI_KEY] = uri
        return payload

    def from_payload(self, payload: Mapping[str, Any]) -> Record:
        return (
            payload.get(PAYLOAD_ID_KEY),  # type: ignore[return-value]
            payload.get(LANGCHAIN_CONTENT_KEY),
            dict(payload.get(LANGCHAIN_METADATA_KEY) or {}),
            payload.get(PAYLOAD_URI_KEY),
        )


@dataclass(frozen=True)
class LlamaIndexLayout(Layout):
    """Metadata flat at the top level, the text inside ``_node_content`` (or under ``text`` without one), plus
    ``chroma_id`` and ``uri``: what llama-index-vector-stores-qdrant reads."""

    name: ClassVar[PayloadLayoutName] = "llamaindex"
    flat: ClassVar[bool] = True
    document_path: ClassVar[str | None] = None  # inside _node_content's JSON: no text field to index
    carries_every_record: ClassVar[bool] = False

    def own_keys(self, metadata: Mapping[str, Any] | None) -> frozenset[str]:
        """The top-level keys this layout writes itself (what a metadata key must not be)."""
        keys = {PAYLOAD_ID_KEY, PAYLOAD_URI_KEY}
        if not metadata or LLAMA_NODE_CONTENT_KEY not in metadata:
            keys.add(LLAMA_TEXT_KEY)
        return frozenset(keys)

    def needs_text(self, metadata: Mapping[str, Any] | None) -> bool:
        return bool(metadata) and LLAMA_NODE_CONTENT_KEY in metadata  # type: ignore[operator]

    def check(
        self, chroma_id: str, document: str | None, metadata: Mapping[str, Any] | None, uri: str | None
    ) -> str | None:
        problem = super().check(chroma_id, document, metadata, uri)
        if problem:
            return problem
        clash = sorted(set(metadata or {}) & self.own_keys(metadata))
        if clash:
            return f"record {chroma_id!r} has a metadata key {clash[0]!r} that the llamaindex layout writes itself"
        node_json = (metadata or {}).get(LLAMA_NODE_CONTENT_KEY)
        if node_json is None:
            return None
        try:
            node = json.loads(node_json) if isinstance(node_json, str) else None
        except ValueError:
            node = None
        if not isinstance(node, dict) or _node_json(node) != node_json:
            return f"record {chroma_id!r} has a {LLAMA_NODE_CONTENT_KEY!r} that is not a LlamaIndex node JSON"
        if node.get(LLAMA_TEXT_KEY, "") != "":
            return (
                f"record {chroma_id!r} already has text inside {LLAMA_NODE_CONTENT_KEY!r} (LlamaIndex's Chroma "
                "store leaves it empty): it cannot be told apart from the document"
            )
        return None

    def to_payload(
        self, chroma_id: str, document: str | None, metadata: Mapping[str, Any] | None, uri: str | None = None
    ) -> dict[str, Any]:
        self.require(chroma_id, document, metadata, uri)
        payload = dict(metadata) if metadata else {}
        text = self.text(document, metadata)
        if LLAMA_NODE_CONTENT_KEY in payload:
            node = json.loads(payload[LLAMA_NODE_CONTENT_KEY])
            node[LLAMA_TEXT_KEY] = text
            payload[LLAMA_NODE_CONTENT_KEY] = _node_json(node)
        else:
            payload[LLAMA_TEXT_KEY] = text
        payload[PAYLOAD_ID_KEY] = chroma_id
        if uri is not None:
            payload[PAYLOAD_URI_KEY] = uri
        return payload

    def from_payload(self, payload: Mapping[str, Any]) -> Record:
        p = dict(payload)
        chroma_id = p.pop(PAYLOAD_ID_KEY, None)
        uri = p.pop(PAYLOAD_URI_KEY, None)
        node_json = p.get(LLAMA_NODE_CONTENT_KEY)
        if isinstance(node_json, str):
            node = json.loads(node_json)
            document = node.get(LLAMA_TEXT_KEY)
            node[LLAMA_TEXT_KEY] = ""
            p[LLAMA_NODE_CONTENT_KEY] = _node_json(node)
        else:
            document = p.pop(LLAMA_TEXT_KEY, None)
        return chroma_id, document, p, uri  # type: ignore[return-value]


#: Each layout's class by its name (the ``payload_layout`` parameter).
LAYOUTS: dict[str, type[Layout]] = {cls.name: cls for cls in (Layout, LangChainLayout, LlamaIndexLayout)}


def get_layout(name: str | None = None, null_documents: NullDocuments = "refuse") -> Layout:
    """The layout named ``name`` (default ``runbook``); a ConfigError for a name no layout has."""
    cls = LAYOUTS.get(name or DEFAULT_LAYOUT)
    if cls is None:
        raise ConfigError(f"Unknown payload layout {name!r}: expected one of {', '.join(LAYOUT_NAMES)}.")
    return cls(null_documents)


def is_llamaindex_record(metadata: Mapping[str, Any] | None) -> bool:
    """Whether a record carries LlamaIndex's ``_node_content`` and ``_node_type`` metadata keys."""
    return bool(metadata) and LLAMA_NODE_CONTENT_KEY in metadata and LLAMA_NODE_TYPE_KEY in metadata  # type: ignore[operator]


def detect_framework(records: int, llamaindex_records: int, with_document: int) -> str:
    """Which framework most likely wrote a collection, from counts over its records, conservatively: ``llamaindex``
    when every record is :func:`is_llamaindex_record`, ``langchain`` when every record has a document and none is
    (LangChain's Chroma store writes exactly that, but so could any app), else ``unknown``."""
    if not records:
        return "unknown"
    if llamaindex_records == records:
        return "llamaindex"
    if llamaindex_records == 0 and with_document == records:
        return "langchain"
    return "unknown"


def recommended_layout(framework: str) -> str:
    return {"llamaindex": "llamaindex", "langchain": "langchain"}.get(framework, DEFAULT_LAYOUT)

"""The sample ChromaDB users know from their migration guide: 14 collections, 14,365 records at scale 1.

``create_sample_db`` writes a ChromaDB persistent directory that looks like a real RAG backend:

* 14 unevenly sized collections (one of 4,000, a few around 2,000, several hundreds, one of 25);
* a mix of ``cosine``, ``l2`` and ``ip``, each declared the old way (collection metadata
  ``{"hnsw:space": ...}``) in some collections and the new way (``configuration={"hnsw": {"space": ...}}``)
  in others;
* ids of many shapes (canonical UUIDs, upper-case UUIDs, UUIDs without hyphens, sha1 hashes, numbers,
  prefixed ids, unicode slugs, paths, e-mail message ids, ids with spaces);
* float32 vectors with real structure: every collection has a common mean direction, 8-40 cluster centres
  of uneven popularity and a low-dimensional spread inside each cluster, plus a little isotropic noise, so
  nearest neighbours are well defined (approximate search agrees with exact search, as on real
  embeddings) -- not uniform noise. The ip collections and half of the cosine ones are unit length; the
  others (and all l2 ones) have norms of roughly 2-10;
* ~500-character documents (some non-ASCII and a few emoji), ~1 in 50 without a document;
* metadata of every type Chroma accepts (str, int, float, bool, homogeneous lists of each), with
  integer-valued floats (``score: 3.0``) next to ints (``page: 3``) and bools; ~1 in 40 without metadata;
* ``uri`` on some records of some collections. (chromadb 1.5.9 reads a record that has a uri but no
  metadata back with metadata ``{}`` rather than ``None``.)

Everything is deterministic from ``seed``. Each collection draws from its own streams, seeded from
``(seed, collection name)``, and every stream is consumed record by record, so a collection's first
records are the same whatever the scale and whatever the other collections are.

The directory is built under a temporary sibling name and renamed into place only when complete, so an
interrupted run never leaves a half-built source behind.

Command line: ``python -m runbook_fixtures.sample_data --path data/chroma_db --scale 1 --seed 42``.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import numbers
import os
import random
import shutil
import sys
import time
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from runbook_lib.errors import ConfigError, RunbookError

#: Largest batch this module ever sends in one ``collection.add`` (also capped by the client's limit).
MAX_BATCH = 2000

SPACES = ("cosine", "l2", "ip")
DECLARATIONS = ("metadata", "configuration")
ID_SHAPES = (
    "uuid",  # canonical lowercase uuid4: "3f2b...-...": kept as the Qdrant point id
    "uuid_upper",  # the same, upper case: hashed with uuid5
    "uuid_hex",  # uuid4().hex, 32 hex digits without hyphens: hashed with uuid5
    "prefixed",  # "book-000123"
    "numeric",  # "123"
    "hash",  # sha1 hex digest
    "slug",  # unicode slug: "café-jakarta—bali-0042"
    "path",  # "visa/b211a-extension.md#chunk-0007"
    "message_id",  # "<20240312.1f3a9c.0042@mail.zantara.example>"
    "sku",  # "SKU 0042-blue" (contains a space)
)


@dataclass(frozen=True)
class CollectionSpec:
    """One sample collection.

    ``declared`` says how the space is declared: ``"metadata"`` (old way, ``metadata={"hnsw:space": space}``)
    or ``"configuration"`` (new way, ``configuration={"hnsw": {"space": space}}``).
    """

    name: str
    count: int
    space: str
    declared: str
    id_shape: str
    id_prefix: str = "doc"
    clusters: int = 16
    normalized: bool = False
    uri_rate: float = 0.0
    uri_template: str = ""
    topic: str = "kb"


def _spec(
    name: str,
    count: int,
    space: str,
    declared: str,
    id_shape: str,
    clusters: int,
    topic: str,
    *,
    id_prefix: str = "doc",
    normalized: bool = False,
    uri_rate: float = 0.0,
    uri_template: str = "",
) -> CollectionSpec:
    return CollectionSpec(
        name, count, space, declared, id_shape, id_prefix, clusters, normalized, uri_rate, uri_template, topic
    )


# fmt: off
SAMPLE_COLLECTIONS: tuple[CollectionSpec, ...] = (
    _spec("zantara_books", 4000, "cosine", "metadata", "prefixed", 40, "books", id_prefix="book",
          uri_rate=0.9, uri_template="s3://bucket/zantara/book-{i:06d}.pdf"),
    _spec("oracle_kb", 2100, "cosine", "configuration", "uuid", 32, "kb", normalized=True),
    _spec("legal_docs", 1900, "l2", "metadata", "hash", 24, "legal",
          uri_rate=0.5, uri_template="s3://bucket/legal/{i:06d}.pdf"),
    _spec("visa_procedures", 1500, "ip", "configuration", "path", 20, "visa", id_prefix="visa", normalized=True,
          uri_rate=0.3, uri_template="https://docs.example.com/visa/{i:05d}.html"),
    _spec("cultural_context", 950, "cosine", "metadata", "slug", 16, "culture", normalized=True),
    _spec("crm_memory", 820, "l2", "configuration", "uuid_upper", 12, "crm"),
    _spec("tax_regulations", 700, "ip", "metadata", "numeric", 14, "tax", normalized=True,
          uri_rate=0.2, uri_template="file:///srv/tax/regulation-{i:05d}.pdf"),
    _spec("property_listings", 600, "l2", "configuration", "prefixed", 10, "property", id_prefix="prop",
          uri_rate=0.8, uri_template="https://cdn.example.com/listings/prop-{i:06d}.jpg"),
    _spec("company_profiles", 480, "cosine", "configuration", "hash", 12, "company",
          uri_rate=0.4, uri_template="s3://bucket/companies/{i:06d}.json"),
    _spec("faq_general", 390, "ip", "configuration", "numeric", 8, "faq", normalized=True),
    _spec("team_notes", 310, "l2", "metadata", "uuid", 8, "notes"),
    _spec("email_threads", 260, "cosine", "metadata", "message_id", 10, "email", normalized=True,
          uri_rate=0.5, uri_template="imap://mail.zantara.example/INBOX;UID={i}"),
    _spec("product_catalog", 330, "ip", "metadata", "sku", 9, "product", normalized=True,
          uri_rate=0.6, uri_template="https://shop.example.com/p/{i:05d}"),
    _spec("support_tickets", 25, "cosine", "configuration", "uuid_hex", 8, "support",
          uri_rate=0.2, uri_template="https://support.example.com/t/{i}"),
)
# fmt: on

#: Records in the sample at scale 1.
SAMPLE_TOTAL = 14365

# --------------------------------------------------------------------------------------------- words


def _words(text: str) -> tuple[str, ...]:
    return tuple(word.strip() for word in text.split("|"))


_PLACES = _words(
    "Jakarta|Bali|Jakarta—Bali|Denpasar|Ubud|Canggu|Surabaya|Yogyakarta|Lombok|Singapore|São Paulo|Zürich|"
    "Malmö|Montréal|the café district|Seminyak"
)
_TOPICS: dict[str, tuple[str, ...]] = {
    "books": _words("chapter|manuscript|edition|author|narrative|glossary|appendix|preface|reader|translation"),
    "kb": _words("answer|procedure|policy|knowledge base entry|escalation path|checklist|runbook|service level"),
    "legal": _words("contract|clause|notary deed|lease agreement|power of attorney|court ruling|statute|amendment"),
    "visa": _words("visa|KITAS|sponsor letter|immigration office|passport|extension|B211A permit|overstay fine"),
    "culture": _words("ceremony|temple|offering|gamelan|batik|village council|festival|greeting|dress code"),
    "crm": _words("customer|follow-up call|lead|quotation|meeting note|renewal|complaint|invoice|preference"),
    "tax": _words("income tax|VAT|withholding|tax treaty|NPWP number|annual return|deduction|penalty|audit"),
    "property": _words("villa|apartment|leasehold|freehold|land certificate|pool|rice-field view|rental yield"),
    "company": _words("company|PT PMA|shareholder|director|business licence|capital|registered office|subsidiary"),
    "faq": _words("question|opening hours|refund|payment method|account|password reset|delivery time|newsletter"),
    "notes": _words("stand-up|retro|action item|deployment|incident|design review|roadmap|sprint goal|decision"),
    "email": _words("thread|reply|attachment|meeting invite|reminder|signature|forwarded message|draft|follow-up"),
    "product": _words("product|SKU|bundle|discount|warranty|stock level|size chart|colour|shipping weight|review"),
    "support": _words("ticket|bug report|workaround|customer|priority|screenshot|reproduction step|patch|escalation"),
}
_SUBJECTS = _words(
    "The team|Our client|The office in {place}|A partner|The reviewer|Each applicant|The consultant|Management|"
    "The local agent|Everyone involved"
)
_VERBS = _words("reviewed|updated|explained|confirmed|translated|summarised|questioned|approved|archived|compared")
_ADJECTIVES = _words("recent|detailed|preliminary|final|revised|complex|routine|urgent|bilingual|official")
_CLOSERS = _words(
    "before the deadline|after a long discussion|with the notary|over coffee at a café|during the rainy season|"
    "for the next quarter|in Bahasa Indonesia and English|without further changes|as agreed last week|"
    "on the Jakarta—Bali route"
)
_CONNECTORS = _words("Meanwhile|In addition|However|As a result|Later|For reference|Note that")
_EMOJI = _words("🌴|📄|✅|🚀|🙏|☕")
_TAGS = _words("urgent|reviewed|draft|archived|bilingual|jakarta|bali|finance|legal|onboarding|faq|vip|café|q3|2024")
_LANGS = _words("en|id|en|en|id|fr|de|nl")
_SLUG_WORDS = _words("café|jakarta—bali|ubud|señora|zürich|pura-tanah-lot|nyepi|kecak|canggu|malmö|bête|galungan")
_COLOURS = _words("blue|red|green|black|white|sand|teal")


# ------------------------------------------------------------------------------------------- counts


def _check_scale(scale: float) -> None:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale) or scale <= 0:
        raise ConfigError(f"scale must be a number greater than 0 (1 = the 14,365-record sample), got {scale!r}.")


def scaled_counts(scale: float) -> dict[str, int]:
    """Records per collection at ``scale`` (1 -> the documented counts; every collection keeps >= 1 record)."""
    _check_scale(scale)
    return {spec.name: max(1, round(spec.count * scale)) for spec in SAMPLE_COLLECTIONS}


# -------------------------------------------------------------------------------------------- seeds


def _seed_sequence(seed: int, name: str, stream: str) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, zlib.crc32(name.encode()), zlib.crc32(stream.encode())])


def _rng(seed: int, name: str, stream: str) -> np.random.Generator:
    return np.random.default_rng(_seed_sequence(seed, name, stream))


# ------------------------------------------------------------------------------------------ vectors


class _VectorStream:
    """Structured embeddings for one collection, produced batch by batch (prefix-stable)."""

    latent_dim = 12

    def __init__(self, spec: CollectionSpec, seed: int, dim: int) -> None:
        self.dim = dim
        self.normalized = spec.normalized
        shape_rng = _rng(seed, spec.name, "shape")
        k = spec.clusters
        # A common mean direction (real embeddings are far from centred), cluster centres of uneven
        # popularity, and a low-rank spread per collection so neighbourhoods are well defined.
        mean = shape_rng.standard_normal(dim) / math.sqrt(dim)
        self.centres = (mean + 0.8 * shape_rng.standard_normal((k, dim)) / math.sqrt(dim)).astype(np.float64)
        weights = 1.0 / np.arange(1, k + 1) ** 0.8
        self.weights = weights / weights.sum()
        self.basis = shape_rng.standard_normal((k, self.latent_dim, dim)) / math.sqrt(dim)
        self.spread = 0.35 / math.sqrt(self.latent_dim)
        self.noise = 0.06
        # l2 collections are not unit length: give each collection its own overall scale.
        self.magnitude = 1.0 if spec.normalized else float(shape_rng.uniform(2.0, 8.0))
        self.assign_rng = _rng(seed, spec.name, "assign")
        self.latent_rng = _rng(seed, spec.name, "latent")
        self.noise_rng = _rng(seed, spec.name, "noise")

    def next(self, n: int) -> np.ndarray:
        cluster = self.assign_rng.choice(len(self.weights), size=n, p=self.weights)
        latent = self.latent_rng.standard_normal((n, self.latent_dim))
        noise = self.noise_rng.standard_normal((n, self.dim), dtype=np.float32).astype(np.float64)
        vectors = self.centres[cluster]
        for c in np.unique(cluster):
            rows = cluster == c
            vectors[rows] += self.spread * (latent[rows] @ self.basis[c])
        vectors += (self.noise / math.sqrt(self.dim)) * noise
        if self.normalized:
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        else:
            vectors *= self.magnitude
        return vectors.astype(np.float32)


# ------------------------------------------------------------------------------- ids, text, metadata


def _record_id(spec: CollectionSpec, i: int, rnd: random.Random) -> str:
    shape = spec.id_shape
    if shape in ("uuid", "uuid_upper", "uuid_hex"):
        value = uuid.UUID(int=rnd.getrandbits(128), version=4)
        return {"uuid": str(value), "uuid_upper": str(value).upper(), "uuid_hex": value.hex}[shape]
    if shape == "prefixed":
        return f"{spec.id_prefix}-{i:06d}"
    if shape == "numeric":
        return str(i + 1)
    if shape == "hash":
        return hashlib.sha1(f"{spec.name}/{i}".encode()).hexdigest()
    if shape == "slug":
        return f"{rnd.choice(_SLUG_WORDS)}-{rnd.choice(_SLUG_WORDS)}-{i:04d}"
    if shape == "path":
        word = rnd.choice(_TOPICS[spec.topic]).replace(" ", "-").lower()
        return f"{spec.id_prefix}/{word}.md#chunk-{i:04d}"
    if shape == "message_id":
        day = f"2024{rnd.randint(1, 12):02d}{rnd.randint(1, 28):02d}"
        return f"<{day}.{rnd.getrandbits(24):06x}.{i:04d}@mail.zantara.example>"
    if shape == "sku":
        return f"SKU {i:05d}-{rnd.choice(_COLOURS)}"
    raise ValueError(f"unknown id shape {shape!r}")


def _document(spec: CollectionSpec, rnd: random.Random) -> str:
    nouns = _TOPICS[spec.topic]
    target = rnd.randint(430, 560)
    sentences: list[str] = []
    length = 0
    while length < target:
        subject = rnd.choice(_SUBJECTS).format(place=rnd.choice(_PLACES))
        sentence = (
            f"{subject} {rnd.choice(_VERBS)} the {rnd.choice(_ADJECTIVES)} {rnd.choice(nouns)} "
            f"for {rnd.choice(_PLACES)} {rnd.choice(_CLOSERS)}."
        )
        if sentences and rnd.random() < 0.35:
            sentence = f"{rnd.choice(_CONNECTORS)}, {sentence[0].lower()}{sentence[1:]}"
        sentences.append(sentence)
        length += len(sentence) + 1
    text = " ".join(sentences)
    if rnd.random() < 0.05:
        text = f"{text} {rnd.choice(_EMOJI)}"
    return text


def _metadata(spec: CollectionSpec, i: int, rnd: random.Random) -> dict[str, Any]:
    page = rnd.randint(1, 400)
    meta: dict[str, Any] = {
        "source": f"{spec.name}/{i:06d}",
        "lang": rnd.choice(_LANGS),
        "page": page,  # int
        "chunk_index": i % 17,  # int
        "year": rnd.randint(2015, 2025),  # int
        "score": rnd.randint(0, 10) / 2,  # float, often integer-valued: 3.0 next to page: 3
        "confidence": round(rnd.random(), 4),  # float
        "active": rnd.random() < 0.7,  # bool
        "city": rnd.choice(_PLACES),  # str, sometimes non-ASCII
    }
    if rnd.random() < 0.6:
        meta["tags"] = rnd.sample(_TAGS, rnd.randint(1, 4))  # list[str]
    if rnd.random() < 0.4:
        meta["page_refs"] = sorted(rnd.sample(range(1, 500), rnd.randint(1, 5)))  # list[int]
    if rnd.random() < 0.3:
        meta["weights"] = [rnd.randint(0, 8) / 4 for _ in range(rnd.randint(1, 4))]  # list[float]
    if rnd.random() < 0.2:
        meta["flags"] = [rnd.random() < 0.5 for _ in range(rnd.randint(1, 3))]  # list[bool]
    if rnd.random() < 0.1:
        meta["reviewed"] = rnd.random() < 0.5
    if spec.topic == "property":
        meta["price_idr"] = rnd.randint(5, 400) * 100_000_000  # beyond int32
        meta["bedrooms"] = rnd.randint(1, 6)
        meta["area_m2"] = float(rnd.randint(40, 900))
    elif spec.topic == "crm":
        meta["customer"] = f"client-{rnd.randint(1, 300):04d}@example.com"
        meta["lifetime_value"] = round(rnd.uniform(0, 50_000), 2)
    elif spec.topic == "books":
        meta["title"] = (
            f"{rnd.choice(_ADJECTIVES).title()} {rnd.choice(_TOPICS['books']).title()} of {rnd.choice(_PLACES)}"
        )
    return meta


def _records(
    spec: CollectionSpec, n: int, seed: int, dim: int, batch: int
) -> Iterator[tuple[list[str], np.ndarray, list[str | None], list[dict[str, Any] | None], list[str | None]]]:
    """Yield (ids, embeddings, documents, metadatas, uris) batches for the first ``n`` records of ``spec``."""
    vectors = _VectorStream(spec, seed, dim)
    record_seeds = _rng(seed, spec.name, "records")
    seen: set[str] = set()
    for start in range(0, n, batch):
        size = min(batch, n - start)
        ids: list[str] = []
        documents: list[str | None] = []
        metadatas: list[dict[str, Any] | None] = []
        uris: list[str | None] = []
        for offset, record_seed in enumerate(record_seeds.integers(0, 2**63, size=size)):
            i = start + offset
            rnd = random.Random(int(record_seed))
            record_id = _record_id(spec, i, rnd)
            if record_id in seen:  # cannot happen with these shapes; a guard against future edits
                raise RuntimeError(f"duplicate sample id {record_id!r} in {spec.name}")
            seen.add(record_id)
            ids.append(record_id)
            documents.append(None if rnd.random() < 1 / 50 else _document(spec, rnd))
            metadatas.append(None if rnd.random() < 1 / 40 else _metadata(spec, i, rnd))
            has_uri = spec.uri_template and rnd.random() < spec.uri_rate
            uris.append(spec.uri_template.format(i=i) if has_uri else None)
        yield ids, vectors.next(size), documents, metadatas, uris


# ------------------------------------------------------------------------------------------- create


def _prepare_target(path: Path) -> None:
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(
            f"{path} already exists; remove it or choose another CHROMA_PERSIST_DIR for the sample database."
        )


def create_sample_db(
    path: str | Path,
    *,
    seed: int = 42,
    scale: float = 1.0,
    dim: int = 1536,
    progress: bool = True,
) -> dict[str, int]:
    """Write the sample ChromaDB persistent directory at ``path``; return ``{collection: record count}``.

    Refuses (``ConfigError``) a ``path`` that exists and is not an empty directory, a ``scale`` that is not
    greater than 0, and a ``dim`` below 2. Parent directories are created as needed.
    """
    import chromadb
    from chromadb.config import Settings
    from tqdm.auto import tqdm

    counts = scaled_counts(scale)
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim < 2:
        raise ConfigError(f"dim must be an integer of at least 2 (1536 = OpenAI text-embedding-3-small), got {dim!r}.")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}.")
    target = Path(path).expanduser()
    _prepare_target(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"Cannot create {target.parent} ({exc.strerror or exc}); choose a writable CHROMA_PERSIST_DIR."
        ) from exc
    staging = target.parent / f".{target.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)

    written: dict[str, int] = {}
    client = chromadb.PersistentClient(path=str(staging), settings=Settings(anonymized_telemetry=False))
    try:
        batch = max(1, min(MAX_BATCH, client.get_max_batch_size()))
        with tqdm(total=sum(counts.values()), desc="sample ChromaDB", unit="rec", disable=not progress) as bar:
            for spec in SAMPLE_COLLECTIONS:
                description = f"Sample {spec.topic} collection ({spec.space}, declared via {spec.declared})"
                if spec.declared == "metadata":
                    collection = client.create_collection(
                        spec.name,
                        metadata={"hnsw:space": spec.space, "description": description},
                        embedding_function=None,
                    )
                else:
                    collection = client.create_collection(
                        spec.name,
                        metadata={"description": description},
                        configuration={"hnsw": {"space": spec.space}},
                        embedding_function=None,
                    )
                bar.set_postfix_str(spec.name)
                for ids, embeddings, documents, metadatas, uris in _records(
                    spec, counts[spec.name], int(seed), int(dim), batch
                ):
                    collection.add(
                        ids=ids,
                        embeddings=embeddings,
                        documents=documents,  # None entries are accepted
                        metadatas=metadatas,
                        uris=uris,
                    )
                    bar.update(len(ids))
                written[spec.name] = collection.count()
                if written[spec.name] != counts[spec.name]:
                    raise RuntimeError(f"{spec.name}: wrote {written[spec.name]} records, expected {counts[spec.name]}")
    except BaseException:
        client.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    client.close()
    _prepare_target(target)  # nobody created it meanwhile
    if target.exists():
        target.rmdir()
    staging.rename(target)
    return written


# --------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m runbook_fixtures.sample_data",
        description="Create the sample ChromaDB (14 collections, 14,365 records at scale 1).",
    )
    parser.add_argument(
        "--path",
        default=os.environ.get("CHROMA_PERSIST_DIR", "data/chroma_db"),
        help="directory to create (default: $CHROMA_PERSIST_DIR or data/chroma_db)",
    )
    parser.add_argument("--scale", type=float, default=1.0, help="record count multiplier (default 1)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--dim", type=int, default=1536, help="vector dimension (default 1536)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        counts = create_sample_db(
            args.path, seed=args.seed, scale=args.scale, dim=args.dim, progress=not args.no_progress
        )
    except RunbookError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    elapsed = time.perf_counter() - started
    for name, count in counts.items():
        print(f"{name:20s} {count:>7d}")
    print(f"{'total':20s} {sum(counts.values()):>7d}  ({len(counts)} collections, {elapsed:.1f} s) -> {args.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

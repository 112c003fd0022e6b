"""The embedding cache: identical chunk text is embedded once per model and tenant.

`embedding_cache` keeps, per tenant, each text's vector by model under the SHA-256 of
the text (never the text). Ingestion and re-embedding embed through
`embed_with_cache`: the vectors found are used as they are, only the other texts go to
the embedder, and their checked vectors are written back in the caller's transaction
(a rollback takes them too). Per tenant, never shared: a cache shared between tenants
would let one tenant learn, from its own ingestion, whether another holds a text
(docs/security.md, "Embedding cache"). An erasure of a document removes the entries of
its chunks' texts (erasure.services.documents).
"""

from __future__ import annotations

import functools
import uuid
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db import connection
from django.db.backends.utils import CursorWrapper
from pgvector import Vector
from pgvector.psycopg.vector import register_vector_info
from psycopg.pq import Format
from psycopg.types import TypeInfo

from core.hashing import sha256_hex
from documents.embedding import Embedder, embed_texts
from documents.models import EmbeddingCacheEntry

CACHE_TABLE = EmbeddingCacheEntry._meta.db_table
# Rows per INSERT: 4 parameters a row, and a statement's vectors stay a few megabytes.
CACHE_INSERT_BATCH = 500

# The vector type of each connection's database (its oid differs between databases).
_vector_types: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@contextmanager
def vector_cursor() -> Iterator[CursorWrapper]:
    """A cursor of Django's connection that sends and reads vectors in binary.

    A psycopg cursor of its own, wrapped the way Django wraps its cursors (so the query
    log and execute wrappers still see it): it binds parameters on the server (`%b`
    sends a vector in pgvector's binary format) and reads results in binary, where
    Django's cursors format and parse 1536 numbers as text. It runs no prepared
    statement (prepare_threshold is None), so it is safe behind PgBouncer's pooling.
    """
    connection.ensure_connection()
    raw = connection.connection
    if raw not in _vector_types:
        _vector_types[raw] = TypeInfo.fetch(raw, "vector")
    binary = psycopg.Cursor(raw)
    binary.format = Format.BINARY
    # A cursor is an adaptation context as a connection is; pgvector's types say connection.
    register_vector_info(binary, _vector_types[raw])  # type: ignore[arg-type]
    wrapped = connection.make_debug_cursor if connection.queries_logged else connection.make_cursor
    # make_cursor wraps a driver cursor; django-stubs types its argument as the wrapper.
    with wrapped(binary) as cursor:  # type: ignore[arg-type]
        yield cursor


_READ_SQL = (
    f"SELECT content_sha256, embedding FROM {CACHE_TABLE} "
    "WHERE tenant_id = %s AND model = %s AND content_sha256 = ANY (%s)"
)


@functools.cache
def _write_sql(rows: int) -> str:
    values = ", ".join(["(%s, %s, %s, %b)"] * rows)
    # A text embedded meanwhile by another transaction keeps that one's vector.
    return (
        f"INSERT INTO {CACHE_TABLE} (tenant_id, model, content_sha256, embedding) "
        f"VALUES {values} ON CONFLICT (tenant_id, content_sha256, model) DO NOTHING"
    )


@dataclass(frozen=True)
class CacheLookup:
    """What the tenant's cache holds for some texts under one model.

    `found`: vectors by the SHA-256 of their text; `missing`: each text the cache does
    not hold, once, by its SHA-256, in the order first met.
    """

    tenant_id: uuid.UUID
    model: str
    hashes: list[str]
    found: dict[str, list[float]]
    missing: dict[str, str]

    @property
    def missing_texts(self) -> list[str]:
        return list(self.missing.values())


def cache_lookup(tenant_id: uuid.UUID, model: str, texts: Sequence[str]) -> CacheLookup:
    """Read the tenant's cached vectors of `texts` by `model` (in the caller's tenant context)."""
    hashes = [sha256_hex(text) for text in texts]
    found = _read(tenant_id, model, hashes)
    missing: dict[str, str] = {}
    for digest, text in zip(hashes, texts, strict=True):
        if digest not in found:
            missing.setdefault(digest, text)
    return CacheLookup(tenant_id, model, hashes, found, missing)


def cache_complete(lookup: CacheLookup, vectors: Sequence[list[float]]) -> list[list[float]]:
    """Every text's vector, given the embedder's checked `vectors` of lookup.missing_texts:
    the new ones are written to the cache in the caller's transaction (a rollback takes
    them too)."""
    new = dict(zip(lookup.missing, vectors, strict=True))
    _write(lookup.tenant_id, lookup.model, list(new.items()))
    return [lookup.found.get(digest) or new[digest] for digest in lookup.hashes]


def embed_with_cache(
    tenant_id: uuid.UUID,
    embedder: Embedder,
    texts: Sequence[str],
    *,
    batch_size: int | None = None,
) -> list[list[float]]:
    """The vectors of `texts` by `embedder`'s model: from the tenant's cache where it has
    them, from the embedder (through embed_texts, which checks its answer) for the others,
    `batch_size` texts a call (None: one call). A text that appears twice is embedded
    once. Runs inside the caller's tenant context and transaction, the embedder called
    inside it; a failing embedder raises as embed_texts does, and nothing is written
    then. (Ingestion calls the embedder outside any transaction: it uses cache_lookup
    and cache_complete around its own call.)
    """
    lookup = cache_lookup(tenant_id, embedder.model, texts)
    missing = lookup.missing_texts
    step = batch_size or len(missing) or 1
    vectors: list[list[float]] = []
    for start in range(0, len(missing), step):
        vectors.extend(embed_texts(embedder, missing[start : start + step]))
    return cache_complete(lookup, vectors)


def _read(tenant_id: uuid.UUID, model: str, hashes: Sequence[str]) -> dict[str, list[float]]:
    if not hashes:
        return {}
    with vector_cursor() as cursor:
        cursor.execute(_READ_SQL, [tenant_id, model, list(set(hashes))])
        # pgvector loads a binary vector as its Vector.
        return {digest: embedding.to_list() for digest, embedding in cursor.fetchall()}


def _write(tenant_id: uuid.UUID, model: str, entries: Sequence[tuple[str, list[float]]]) -> None:
    if not entries:
        return
    rows: list[tuple[Any, ...]] = [
        (tenant_id, model, digest, Vector(vector)) for digest, vector in entries
    ]
    with vector_cursor() as cursor:
        for start in range(0, len(rows), CACHE_INSERT_BATCH):
            batch = rows[start : start + CACHE_INSERT_BATCH]
            cursor.execute(_write_sql(len(batch)), [value for row in batch for value in row])

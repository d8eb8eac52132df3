"""Arrow schemas: the contract between stages.

Each stage declares the schema it takes and the one it gives (see ``tasks.STAGES``); the flow
checks the chain before a run starts, and every stage checks its input at the door.
"""

from __future__ import annotations

import uuid

import pyarrow as pa

# Namespace for all Headwater ids: uuid5(NAMESPACE, <identity string>).
NAMESPACE = uuid.UUID("5b0a8f8e-6c1e-5d55-9a57-0f1f3c1f2d10")

DOCUMENT = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),  # uuid5 of source_uri
        pa.field("source_uri", pa.string(), nullable=False),  # file:///abs/path
        pa.field("path", pa.string(), nullable=False),  # local path to read
        pa.field("size", pa.int64(), nullable=False),
        pa.field("mtime_ns", pa.int64(), nullable=False),
        pa.field("content_sha256", pa.string(), nullable=False),
    ]
)

ELEMENT = pa.schema(
    [
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("content_sha256", pa.string(), nullable=False),
        pa.field("mime_type", pa.string()),
        pa.field("title", pa.string()),  # document title
        pa.field("element_index", pa.int32(), nullable=False),
        pa.field("category", pa.string(), nullable=False),  # unstructured element type
        pa.field("section", pa.string()),  # heading path, " > " separated
        pa.field("page_number", pa.int32()),
        pa.field("text", pa.string(), nullable=False),
    ]
)

CHUNK = pa.schema(
    [
        pa.field("chunk_id", pa.string(), nullable=False),  # uuid5(doc_id, text hash, occurrence)
        pa.field("doc_id", pa.string(), nullable=False),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("content_sha256", pa.string(), nullable=False),
        pa.field("mime_type", pa.string()),
        pa.field("title", pa.string()),
        pa.field("section", pa.string()),
        pa.field("page_number", pa.int32()),
        pa.field("chunk_index", pa.int32(), nullable=False),
        pa.field("chunk_count", pa.int32(), nullable=False),  # chunks of the whole document
        pa.field("text", pa.string(), nullable=False),
        pa.field("text_sha256", pa.string(), nullable=False),
        pa.field("token_count", pa.int32(), nullable=False),
    ]
)

EMBEDDED_CHUNK = CHUNK.append(pa.field("vector", pa.list_(pa.float32()), nullable=False))

ERROR = pa.schema(
    [
        pa.field("doc_id", pa.string()),
        pa.field("source_uri", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("retryable", pa.bool_(), nullable=False),
    ]
)


class ContractError(TypeError):
    """A stage got a table that does not match its declared schema: a bug, not bad input."""


def check_table(table: pa.Table, schema: pa.Schema, stage: str) -> pa.Table:
    """Return ``table`` with columns in schema order, or raise when a column is missing or mistyped.

    Raises:
        ContractError: a field of ``schema`` is missing from ``table`` or has another type.
    """
    for field in schema:
        if field.name not in table.column_names:
            raise ContractError(f"stage {stage!r}: input lacks column {field.name!r}")
        actual = table.schema.field(field.name).type
        if actual != field.type and not (pa.types.is_null(actual) and table.num_rows == 0):
            raise ContractError(f"stage {stage!r}: column {field.name!r} is {actual}, expected {field.type}")
    return table.select(schema.names).cast(schema)


def stable_id(*parts: str) -> str:
    """Deterministic uuid5 from identity parts (never positions in a batch)."""
    return str(uuid.uuid5(NAMESPACE, "\x1f".join(parts)))


def doc_id_for(source_uri: str) -> str:
    return stable_id("doc", source_uri)


def chunk_id_for(doc_id: str, text_sha256: str, occurrence: int) -> str:
    """A chunk's id: its document and its text (and which repeat of that text), not its position."""
    return stable_id("chunk", doc_id, text_sha256, str(occurrence))


def error_table(rows: list[dict[str, object]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=ERROR)

"""Chunk: ELEMENT rows -> CHUNK rows, recursive and token-aware.

Splits each document's text on its natural boundaries (blank lines, lines, sentences, words),
measuring size in the embedding model's own tokenizer so that no chunk is cut off by the model.
The splitting itself is semantic-text-splitter's (a maintained Rust library); this module only
joins elements into documents and carries page and section metadata onto chunks. No IO.
"""

from __future__ import annotations

import bisect
import hashlib
from collections import Counter
from itertools import groupby
from typing import Any

import pyarrow as pa

from schemas.config import ChunkConfig, EmbedModelConfig
from schemas.records import CHUNK, ELEMENT, check_table, chunk_id_for
from tasks.models import load_tokenizer

STAGE = "chunk"
_SEPARATOR = "\n\n"
_SPECIAL_TOKENS = 2  # [CLS] and [SEP] take room in the model's window


class RecursiveChunker:
    """Token-aware recursive chunker; cheap to build, loads its tokenizer in :meth:`warm_up`."""

    def __init__(self, config: ChunkConfig, model: EmbedModelConfig) -> None:
        self.config = config
        self.model = model
        self._splitter: Any = None
        self._tokenizer: Any = None
        self.capacity = config.size_tokens

    def warm_up(self) -> None:
        if self._splitter is not None:
            return
        from semantic_text_splitter import TextSplitter

        self._tokenizer, max_len = load_tokenizer(self.model.model)
        self.capacity = min(self.config.size_tokens, max_len - _SPECIAL_TOKENS)
        overlap = min(self.config.overlap_tokens, self.capacity - 1)
        self._splitter = TextSplitter.from_huggingface_tokenizer(self._tokenizer, self.capacity, overlap)

    def chunk(self, elements: pa.Table) -> pa.Table:
        """Chunk every document of an ELEMENT table (a document's elements must be contiguous).

        Raises:
            ContractError: ``elements`` is not an ELEMENT table.
        """
        elements = check_table(elements, ELEMENT, STAGE)
        self.warm_up()
        rows: list[dict[str, Any]] = []
        for _, group in groupby(elements.to_pylist(), key=lambda r: r["doc_id"]):
            rows.extend(self.chunk_document(list(group)))
        if rows:
            counts = self._tokenizer.encode_batch([r["text"] for r in rows], add_special_tokens=False)
            for row, encoding in zip(rows, counts, strict=True):
                row["token_count"] = len(encoding.ids)
        return pa.Table.from_pylist(rows, schema=CHUNK)

    def chunk_document(self, elements: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Chunks of one document, given its ELEMENT rows in reading order."""
        starts: list[int] = []
        parts: list[str] = []
        offset = 0
        for element in elements:
            starts.append(offset)
            parts.append(element["text"])
            offset += len(element["text"]) + len(_SEPARATOR)
        pieces = self._splitter.chunk_indices(_SEPARATOR.join(parts))
        first = elements[0]
        seen: Counter[str] = Counter()
        rows = []
        for index, (start, text) in enumerate(pieces):
            origin = elements[max(bisect.bisect_right(starts, start) - 1, 0)]
            text_sha = hashlib.sha256(text.encode()).hexdigest()
            seen[text_sha] += 1
            rows.append(
                {
                    # Identity is the document plus the text (and its repeat number), not the
                    # position: an edit elsewhere in the document leaves this id unchanged.
                    "chunk_id": chunk_id_for(first["doc_id"], text_sha, seen[text_sha]),
                    "doc_id": first["doc_id"],
                    "source_uri": first["source_uri"],
                    "content_sha256": first["content_sha256"],
                    "mime_type": first["mime_type"],
                    "title": first["title"],
                    "section": origin["section"],
                    "page_number": origin["page_number"],
                    "chunk_index": index,
                    "chunk_count": len(pieces),
                    "text": text,
                    "text_sha256": text_sha,
                    "token_count": 0,
                }
            )
        return rows

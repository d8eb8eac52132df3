"""Chunk: ELEMENT rows -> CHUNK rows, with three strategies (``chunk.strategy``).

- ``recursive``: splits each document on its natural boundaries (blank lines, lines, sentences,
  words), by semantic-text-splitter (a maintained Rust library).
- ``structure``: the same splitting, but never across a heading: each run of elements under one
  heading path (unstructured's titles) is chunked on its own, and carries that path as ``section``.
- ``semantic``: splits where the embedding similarity of neighbouring sentences drops below
  ``chunk.semantic_threshold``, by chonkie's ``SemanticChunker`` on the embedding model itself.

Every size is measured in the embedding model's own tokenizer, so no chunk is cut off by the
model; a semantic group that is still too long is split recursively. This module only joins
elements, calls the splitters and carries page and section metadata onto chunks. No IO.
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
from tasks.models import load_tokenizer, resolve_model

STAGE = "chunk"
_SEPARATOR = "\n\n"
_SPECIAL_TOKENS = 2  # [CLS] and [SEP] take room in the model's window


class RecursiveChunker:
    """Token-aware recursive chunker; cheap to build, loads its tokenizer in :meth:`warm_up`."""

    strategy = "recursive"

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
        pieces: list[tuple[dict[str, Any], str]] = []  # (element the piece starts in, text)
        for group in self.groups(elements):
            starts: list[int] = []
            parts: list[str] = []
            offset = 0
            for element in group:
                starts.append(offset)
                parts.append(element["text"])
                offset += len(element["text"]) + len(_SEPARATOR)
            for start, text in self.split(_SEPARATOR.join(parts)):
                pieces.append((group[max(bisect.bisect_right(starts, start) - 1, 0)], text))
        first = elements[0]
        seen: Counter[str] = Counter()
        rows = []
        for index, (origin, text) in enumerate(pieces):
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

    def groups(self, elements: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Runs of elements chunked independently: the whole document."""
        return [elements]

    def split(self, text: str) -> list[tuple[int, str]]:
        """(character offset, text) of each chunk of ``text``."""
        return list(self._splitter.chunk_indices(text))


class StructureChunker(RecursiveChunker):
    """Chunks each section (a run of elements under one heading path) on its own."""

    strategy = "structure"

    def groups(self, elements: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        return [list(run) for _, run in groupby(elements, key=lambda e: e["section"] or "")]


class SemanticChunker(RecursiveChunker):
    """Splits where neighbouring sentences' embeddings stop being similar; bounded in tokens."""

    strategy = "semantic"

    def __init__(self, config: ChunkConfig, model: EmbedModelConfig) -> None:
        super().__init__(config, model)
        self._semantic: Any = None

    def warm_up(self) -> None:
        if self._semantic is not None:
            return
        super().warm_up()
        from chonkie import SemanticChunker as ChonkieSemantic
        from chonkie import SentenceTransformerEmbeddings
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformer(resolve_model(self.model.model), device="cpu")
        self._semantic = ChonkieSemantic(
            embedding_model=SentenceTransformerEmbeddings(encoder), threshold=self.config.semantic_threshold,
            chunk_size=self.capacity, similarity_window=1, min_sentences_per_chunk=1,
        )

    def split(self, text: str) -> list[tuple[int, str]]:
        pieces: list[tuple[int, str]] = []
        for chunk in self._semantic.chunk(text):
            body = chunk.text.strip()
            if not body:
                continue
            start = chunk.start_index + chunk.text.index(body[0])
            if len(self._tokenizer.encode(body, add_special_tokens=False).ids) <= self.capacity:
                pieces.append((start, body))
            else:  # the similarity split left a group longer than the model's window
                pieces.extend((start + offset, part) for offset, part in self._splitter.chunk_indices(body))
        return pieces


CHUNKERS: dict[str, type[RecursiveChunker]] = {c.strategy: c for c in (RecursiveChunker, StructureChunker,
                                                                       SemanticChunker)}


def make_chunker(config: ChunkConfig, model: EmbedModelConfig) -> RecursiveChunker:
    """The chunker ``config.strategy`` names."""
    return CHUNKERS[config.strategy](config, model)

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

from schemas.config import ChunkConfig, EmbedModelConfig
from schemas.records import CHUNK, ELEMENT
from tasks.chunk import RecursiveChunker


@pytest.fixture(scope="module")
def chunker() -> RecursiveChunker:
    c = RecursiveChunker(ChunkConfig(size_tokens=48, overlap_tokens=8), EmbedModelConfig())
    c.warm_up()
    return c


def _elements(doc_id: str, texts: list[str]) -> pa.Table:
    rows = [
        {"doc_id": doc_id, "source_uri": f"file:///{doc_id}", "content_sha256": "c" * 64, "mime_type": "text/plain",
         "title": "T", "element_index": i, "category": "NarrativeText", "section": f"S{i}", "page_number": i + 1,
         "text": t}
        for i, t in enumerate(texts)
    ]
    return pa.Table.from_pylist(rows, schema=ELEMENT)


PARAS = [
    " ".join(f"alpha{i} beta{i} gamma{i} delta{i}" for i in range(30)),
    "A short closing paragraph about rivers.",
    " ".join(f"omega{i} sigma{i}" for i in range(40)),
]


def test_chunks_fit_the_model_window_and_keep_metadata(chunker: RecursiveChunker) -> None:
    chunks = chunker.chunk(_elements("d1", PARAS))
    assert chunks.schema.equals(CHUNK)
    counts = chunks.column("token_count").to_pylist()
    assert max(counts) <= 48 and min(counts) > 0
    assert chunks.column("chunk_index").to_pylist() == list(range(chunks.num_rows))
    assert set(chunks.column("chunk_count").to_pylist()) == {chunks.num_rows}
    rivers = next(r for r in chunks.to_pylist() if "rivers" in r["text"])
    assert rivers["page_number"] in (1, 2)
    assert chunks.to_pylist()[-1]["section"] == "S2"


def test_token_count_is_the_model_tokenizer_count(chunker: RecursiveChunker) -> None:
    from tasks.models import load_tokenizer

    tokenizer, max_len = load_tokenizer("all-MiniLM-L6-v2")
    assert max_len == 256
    for row in chunker.chunk(_elements("d1", PARAS)).to_pylist():
        assert row["token_count"] == len(tokenizer.encode(row["text"], add_special_tokens=False).ids)


def test_neighbours_overlap(chunker: RecursiveChunker) -> None:
    texts = chunker.chunk(_elements("d1", PARAS[:1])).column("text").to_pylist()
    assert len(texts) >= 3
    assert any(a.split()[-1] in b.split()[:10] for a, b in itertools.pairwise(texts))


def test_ids_are_deterministic_and_survive_edits_elsewhere(chunker: RecursiveChunker) -> None:
    first = chunker.chunk(_elements("d1", PARAS))
    again = chunker.chunk(_elements("d1", PARAS))
    assert first.column("chunk_id").to_pylist() == again.column("chunk_id").to_pylist()
    edited = chunker.chunk(_elements("d1", [PARAS[0], "An edited middle paragraph.", PARAS[2]]))
    kept = set(first.column("chunk_id").to_pylist()) & set(edited.column("chunk_id").to_pylist())
    first_texts = {r["chunk_id"]: r["text"] for r in first.to_pylist()}
    assert any("alpha0" in first_texts[c] for c in kept)  # the unchanged opening keeps its id
    other_doc = chunker.chunk(_elements("d2", PARAS))
    assert not set(other_doc.column("chunk_id").to_pylist()) & set(first.column("chunk_id").to_pylist())


def test_documents_in_one_batch_are_chunked_separately(chunker: RecursiveChunker) -> None:
    table = pa.concat_tables([_elements("d1", PARAS[1:2]), _elements("d2", PARAS[1:2])])
    chunks = chunker.chunk(table)
    assert chunks.column("doc_id").to_pylist() == ["d1", "d2"]

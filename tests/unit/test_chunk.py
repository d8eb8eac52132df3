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


def _sectioned(sections: dict[str, list[str]]) -> pa.Table:
    rows, i = [], 0
    for section, texts in sections.items():
        for text in texts:
            rows.append({"doc_id": "d", "source_uri": "file:///d", "content_sha256": "c" * 64,
                         "mime_type": "text/markdown", "title": "Guide", "element_index": i,
                         "category": "NarrativeText", "section": section, "page_number": None, "text": text})
            i += 1
    return pa.Table.from_pylist(rows, schema=ELEMENT)


def test_structure_chunks_never_cross_a_heading_and_carry_its_path() -> None:
    from tasks.chunk import make_chunker

    chunker = make_chunker(ChunkConfig(strategy="structure", size_tokens=64, overlap_tokens=0), EmbedModelConfig())
    table = _sectioned({"Guide > Install": ["Install it with pip.", "Then run the setup step."],
                        "Guide > Usage": ["Call the main function.", "Read the output file."]})
    chunks = chunker.chunk(table).to_pylist()
    assert [(c["section"], c["text"]) for c in chunks] == [
        ("Guide > Install", "Install it with pip.\n\nThen run the setup step."),
        ("Guide > Usage", "Call the main function.\n\nRead the output file."),
    ]
    recursive = make_chunker(ChunkConfig(size_tokens=64, overlap_tokens=0), EmbedModelConfig()).chunk(table)
    assert recursive.num_rows == 1  # the same text fits one chunk when headings are ignored


def test_semantic_chunks_split_where_the_topic_changes_and_stay_in_the_window() -> None:
    from tasks.chunk import make_chunker

    volcano = ("Volcanoes erupt molten lava from the mantle. Magma chambers feed volcanic eruptions. "
               "Lava flows cool into basalt rock. ")
    bread = ("Sourdough bread rises with wild yeast. Bakers knead the dough and let it proof. "
             "The loaf bakes in a hot oven until the crust is brown. ")
    config = ChunkConfig(strategy="semantic", size_tokens=200, overlap_tokens=0, semantic_threshold=0.3)
    chunker = make_chunker(config, EmbedModelConfig())
    chunks = chunker.chunk(_sectioned({"S": [volcano + bread]})).to_pylist()
    assert len(chunks) >= 2
    assert "Volcanoes" in chunks[0]["text"] and "Sourdough" not in chunks[0]["text"]
    assert any("Sourdough" in c["text"] for c in chunks[1:])
    long = " ".join(f"Sentence number {i} talks about the same volcano lava." for i in range(80))
    sized = make_chunker(config.model_copy(update={"size_tokens": 40}), EmbedModelConfig())
    for chunk in sized.chunk(_sectioned({"S": [long]})).to_pylist():
        assert 0 < chunk["token_count"] <= 40

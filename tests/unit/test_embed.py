from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from schemas.config import EmbedModelConfig, EmbedRuntimeConfig
from schemas.records import CHUNK, EMBEDDED_CHUNK
from tasks.embed import Embedder, budget_batches


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    e = Embedder(EmbedModelConfig(), EmbedRuntimeConfig(batch_size=8, precision="fp32"))
    e.warm_up()
    return e


def _chunks(texts: list[str]) -> pa.Table:
    rows = [
        {"chunk_id": f"c{i}", "doc_id": "d", "source_uri": "file:///d", "content_sha256": "c", "mime_type": None,
         "title": None, "section": None, "page_number": None, "chunk_index": i, "chunk_count": len(texts),
         "text": t, "text_sha256": "h", "token_count": 3}
        for i, t in enumerate(texts)
    ]
    return pa.Table.from_pylist(rows, schema=CHUNK)


def test_embed_adds_normalised_vectors_in_row_order(embedder: Embedder) -> None:
    texts = ["The cat sat on the mat.", "Stock markets fell sharply today.", "A kitten rests on a rug."]
    out = embedder.embed(_chunks(texts))
    assert out.schema.equals(EMBEDDED_CHUNK)
    vectors = np.array(out.column("vector").to_pylist(), dtype=np.float32)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    sims = vectors @ vectors.T
    assert sims[0, 2] > sims[0, 1] + 0.2  # cat/kitten closer than cat/stocks: order kept


def test_bf16_stays_close_to_fp32(embedder: Embedder) -> None:
    texts = [f"Sentence number {i} about rivers, volcanoes and bread." for i in range(16)]
    reference = embedder.encode(texts)
    fast = Embedder(EmbedModelConfig(), EmbedRuntimeConfig(batch_size=8, precision="bf16"))
    cos = np.sum(reference * fast.encode(texts), axis=1)
    assert cos.min() > 0.99


def test_empty_batch(embedder: Embedder) -> None:
    assert embedder.embed(_chunks([])).num_rows == 0


def test_budget_batches_fill_to_the_budget_longest_first() -> None:
    lengths = [10, 200, 30, 200, 5, 120, 256]
    groups = budget_batches(lengths, budget=512, max_rows=64)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))  # every text once
    for group in groups:
        assert lengths[group[0]] == max(lengths[i] for i in group)  # padded to its first (longest)
        assert len(group) == 1 or lengths[group[0]] * len(group) <= 512
    assert groups[0] == [6, 1]  # 256 + 200: a third row would pad to 768
    assert budget_batches([10] * 10, budget=1000, max_rows=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert budget_batches([900], budget=100, max_rows=8) == [[0]]  # too long alone still gets embedded


def test_token_budget_batches_give_the_same_vectors_in_order(embedder: Embedder) -> None:
    texts = ["short", "A much longer passage about rivers, volcanoes, bread and the history of all three. " * 6,
             "medium length sentence about a cat", "x"]
    budgeted = Embedder(EmbedModelConfig(), EmbedRuntimeConfig(batch_size=8, precision="fp32", token_budget=64))
    assert len(budget_batches(budgeted.token_lengths(texts), 64, 8)) > 1  # really several batches
    assert np.allclose(budgeted.encode(texts), embedder.encode(texts), atol=1e-4)

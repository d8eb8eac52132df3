from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from schemas.config import EmbedModelConfig, EmbedRuntimeConfig
from schemas.records import CHUNK, EMBEDDED_CHUNK
from tasks.embed import Embedder


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

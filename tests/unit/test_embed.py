from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from schemas.config import EmbedModelConfig, EmbedRuntimeConfig
from schemas.records import CHUNK, EMBEDDED_CHUNK
from tasks import embed_openvino
from tasks.embed import Embedder, budget_batches
from tasks.embed_openvino import ExportUnsupported

VARIED = ["The cat sat on the mat.", "x", "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
          "A much longer passage about rivers, volcanoes, bread and the history of all three. " * 30,  # truncated
          *(f"Sentence number {i} about rivers, volcanoes and bread. " * (1 + i % 7) for i in range(20))]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    """The reference: torch in fp32."""
    e = Embedder(EmbedModelConfig(), EmbedRuntimeConfig(batch_size=8, precision="fp32", backend="torch"))
    e.warm_up()
    return e


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("embed-cache")


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


@pytest.mark.parametrize("backend", ["torch", "openvino"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_backends_and_precisions_give_the_reference_vectors(embedder: Embedder, cache_dir: Path, backend: str,
                                                             precision: str) -> None:
    other = Embedder(EmbedModelConfig(), EmbedRuntimeConfig(batch_size=8, precision=precision, backend=backend,
                                                            cache_dir=cache_dir))
    vectors = other.encode(VARIED)
    assert other.backend == backend
    cos = np.sum(embedder.encode(VARIED) * vectors, axis=1)  # row by row: the order is kept
    assert cos.min() > (0.99999 if precision == "fp32" else 0.999), cos.min()
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)


def test_openvino_is_the_cpu_default_and_its_export_is_cached(embedder: Embedder, cache_dir: Path) -> None:
    first = Embedder(EmbedModelConfig(), EmbedRuntimeConfig(batch_size=8, cache_dir=cache_dir))
    first.warm_up()
    assert first.backend == "openvino"
    exported = first._openvino.folder / "model.onnx"
    stamp = exported.stat().st_mtime_ns
    again = Embedder(EmbedModelConfig(), EmbedRuntimeConfig(batch_size=8, cache_dir=cache_dir))
    again.warm_up()
    assert again._openvino.folder == first._openvino.folder and exported.stat().st_mtime_ns == stamp  # reused
    assert [p.name for p in cache_dir.iterdir()] == [first._openvino.folder.name]  # no scratch left behind
    # fewer threads (the dataflow gives embedding one core while parsing runs): the same vectors
    reference = again.encode(VARIED)
    again.set_threads(1)
    assert np.allclose(again.encode(VARIED), reference, atol=2e-3)


def test_a_model_openvino_cannot_match_falls_back_to_torch_or_fails_when_asked_for(
        embedder: Embedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(embed_openvino, "MIN_COSINE", 1.5)  # no vectors can pass the check
    auto = Embedder(EmbedModelConfig(), EmbedRuntimeConfig(batch_size=8, precision="fp32", cache_dir=tmp_path))
    assert np.allclose(auto.encode(VARIED), embedder.encode(VARIED), atol=1e-4)
    assert auto.backend == "torch"
    assert "OpenVINO backend cannot run it" in caplog.text and "min cosine" in caplog.text
    forced = Embedder(EmbedModelConfig(), EmbedRuntimeConfig(backend="openvino", cache_dir=tmp_path))
    with pytest.raises(ExportUnsupported, match=r"embed\.backend 'openvino' cannot run all-MiniLM-L6-v2.*min cosine"):
        forced.warm_up()


def test_openvino_backend_is_cpu_only() -> None:
    with pytest.raises(ValidationError, match="runs on the CPU"):
        EmbedRuntimeConfig(backend="openvino", device="cuda")


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
    budgeted = Embedder(EmbedModelConfig(), EmbedRuntimeConfig(batch_size=8, precision="fp32", token_budget=64,
                                                               backend="torch"))
    assert len(budget_batches(budgeted.token_lengths(texts), 64, 8)) > 1  # really several batches
    assert np.allclose(budgeted.encode(texts), embedder.encode(texts), atol=1e-4)


def test_export_cache_key_follows_the_model_files_not_their_path(tmp_path: Path) -> None:
    """Under Ray each job installs the model anew elsewhere: the same files must find the same export."""
    from tasks.models import resolve_model

    class Model(list):  # what cache_key reads of a SentenceTransformer
        max_seq_length = 256

    def key(folder: Path) -> str:
        return embed_openvino.cache_key(str(folder), Model([type("T", (), {"model": None})()]))

    original = Path(resolve_model("all-MiniLM-L6-v2"))
    copy = tmp_path / "elsewhere" / "model"
    shutil.copytree(original, copy)
    assert key(copy) == key(original)
    config = copy / "config.json"
    config.write_text(config.read_text().replace('"hidden_act"', '"hidden_act" ', 1))  # one byte more
    assert key(copy) != key(original)

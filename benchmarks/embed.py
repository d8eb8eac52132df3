"""Embed benchmark: the pipeline's embed stage against raw ``SentenceTransformer.encode``, same chunks.

Chunks the first ``--docs`` NFCorpus documents with the pipeline's chunker, then embeds them
(after a warm-up batch) with:
  1. the embed stage (``tasks.embed.Embedder.embed`` on the CHUNK table, its default precision),
  2. raw ``SentenceTransformer.encode`` at the same precision (bf16 autocast on a bf16 CPU),
  3. raw ``SentenceTransformer.encode`` as a user would call it (fp32, batch 32).
Prints passages/s, the ratios to the raw calls, and the minimum cosine between stage and raw vectors.

    uv run python benchmarks/embed.py --docs 600
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infra.environment import apply_quiet_defaults

apply_quiet_defaults()

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402

from schemas.config import load_config  # noqa: E402
from schemas.records import ELEMENT  # noqa: E402
from tasks.chunk import make_chunker  # noqa: E402
from tasks.embed import Embedder, passages  # noqa: E402
from tasks.models import resolve_model  # noqa: E402


def chunks_of(beir: Path, docs: int, config: object) -> pa.Table:
    rows = []
    with (beir / "corpus.jsonl").open() as fh:
        for n, line in enumerate(fh):
            if n >= docs:
                break
            d = json.loads(line)
            for i, text in enumerate(t for t in (d["title"], d["text"]) if t.strip()):
                rows.append({"doc_id": d["_id"], "source_uri": f"file:///{d['_id']}.md", "content_sha256": "0" * 64,
                             "mime_type": "text/markdown", "title": d["title"], "element_index": i,
                             "category": "Title" if i == 0 else "NarrativeText", "section": d["title"],
                             "page_number": None, "text": text})
    chunker = make_chunker(config.chunk, config.embed_model)  # type: ignore[attr-defined]
    return chunker.chunk(pa.Table.from_pylist(rows, schema=ELEMENT))


def timed(label: str, fn: object, n: int) -> tuple[float, np.ndarray]:
    started = time.perf_counter()
    vectors = fn()  # type: ignore[operator]
    seconds = time.perf_counter() - started
    print(f"{label:<52} {n / seconds:7.1f} passages/s ({seconds:.1f} s)", flush=True)
    return n / seconds, np.asarray(vectors, dtype=np.float32)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", type=Path, default=Path("../shared/data/beir/nfcorpus"))
    parser.add_argument("--docs", type=int, default=600)
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    config = load_config()
    chunks = chunks_of(args.beir, args.docs, config)
    texts = passages(chunks, config.embed_model.context)
    print(f"{chunks.num_rows} chunks of {args.docs} documents; torch threads {torch.get_num_threads()}")
    stage = Embedder(config.embed_model, config.embed)
    stage.embed(chunks.slice(0, 64))  # warm-up: model load and first batches
    raw = SentenceTransformer(resolve_model(config.embed_model.model), device="cpu")
    raw.encode(texts[:64])
    bf16 = stage.precision == "bf16"
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    def raw_same_precision() -> np.ndarray:
        with torch.inference_mode(), autocast:
            return raw.encode(texts, batch_size=config.embed.batch_size, normalize_embeddings=True)

    n = chunks.num_rows
    def stage_vectors() -> np.ndarray:
        return np.stack(stage.embed(chunks).column("vector").to_numpy(zero_copy_only=False))

    stage_rate, stage_vecs = timed(f"embed stage ({stage.precision}, batch {config.embed.batch_size})",
                                   stage_vectors, n)
    same_rate, same_vecs = timed(f"raw encode, same precision ({stage.precision})", raw_same_precision, n)
    user_rate, user_vecs = timed("raw encode as called by a user (fp32, batch 32)",
                                 lambda: raw.encode(texts, normalize_embeddings=True), n)
    cos_same = float(np.min(np.sum(stage_vecs * same_vecs, axis=1)))
    cos_user = float(np.min(np.sum(stage_vecs * user_vecs, axis=1)))
    print(f"embed stage / raw encode same precision: {stage_rate / same_rate:.2f}x (target >= 0.9); "
          f"min cosine {cos_same:.5f}")
    print(f"embed stage / raw encode fp32:           {stage_rate / user_rate:.2f}x; min cosine {cos_user:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

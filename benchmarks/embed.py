"""Embed benchmark: the pipeline's embed stage against raw ``SentenceTransformer.encode``, same chunks.

Chunks the first ``--docs`` NFCorpus documents with the pipeline's chunker, then embeds them
(after a warm-up batch) with:
  1. the embed stage (``tasks.embed.Embedder.embed`` on the CHUNK table, its defaults: OpenVINO on a CPU),
  2. the embed stage with ``embed.backend = "torch"`` (its own overhead over the raw call below),
  3. raw ``SentenceTransformer.encode`` at the same precision (bf16 autocast on a bf16 CPU),
  4. raw ``SentenceTransformer.encode`` as a user would call it (fp32, batch 32).
``--rounds`` repeats them interleaved (1, 2, 3, 4, 1, 2, ...) and takes each one's median, so that a
shared machine's noise falls on all of them alike. Prints passages/s, the ratios to the raw calls, and
the minimum cosine between the stage's and the raw vectors.

    uv run python benchmarks/embed.py --docs 600 --rounds 3
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
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    config = load_config()
    chunks = chunks_of(args.beir, args.docs, config)
    texts = passages(chunks, config.embed_model.context)
    n, batch = chunks.num_rows, config.embed.batch_size
    print(f"{n} chunks of {args.docs} documents; torch threads {torch.get_num_threads()}; {args.rounds} round(s)")
    stage = Embedder(config.embed_model, config.embed)
    torch_stage = Embedder(config.embed_model, config.embed.model_copy(update={"backend": "torch"}))
    for embedder in (stage, torch_stage):
        embedder.embed(chunks.slice(0, 64))  # warm-up: model load (and export) and first batches
    raw = SentenceTransformer(resolve_model(config.embed_model.model), device="cpu")
    raw.encode(texts[:64])
    bf16 = stage.precision == "bf16"

    def raw_same_precision() -> np.ndarray:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return raw.encode(texts, batch_size=batch, normalize_embeddings=True)

    runs = {
        f"embed stage ({stage.describe()}, batch {batch})":
            lambda: np.stack(stage.embed(chunks).column("vector").to_numpy(zero_copy_only=False)),
        f"embed stage ({torch_stage.describe()}, batch {batch})":
            lambda: np.stack(torch_stage.embed(chunks).column("vector").to_numpy(zero_copy_only=False)),
        f"raw encode, same precision ({stage.precision})": raw_same_precision,
        "raw encode as called by a user (fp32, batch 32)": lambda: raw.encode(texts, normalize_embeddings=True),
    }
    rates: dict[str, list[float]] = {label: [] for label in runs}
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for label, fn in runs.items():
            rate, vectors[label] = timed(label, fn, n)
            rates[label].append(rate)
    ours, ours_torch, same, user = (float(np.median(rates[label])) for label in runs)
    vec = list(vectors.values())
    print(f"\nmedians: {', '.join(f'{label}: {float(np.median(r)):.1f}' for label, r in rates.items())}")
    print(f"embed stage / raw encode same precision: {ours / same:.2f}x (target >= 0.9); "
          f"min cosine {np.min(np.sum(vec[0] * vec[2], axis=1)):.5f}")
    print(f"embed stage on torch / raw encode same precision: {ours_torch / same:.2f}x (the stage's own overhead)")
    print(f"embed stage / raw encode fp32: {ours / user:.2f}x; "
          f"min cosine {np.min(np.sum(vec[0] * vec[3], axis=1)):.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

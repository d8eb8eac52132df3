"""Embed backends benchmark: the torch embed stage against OpenVINO and ONNX Runtime on CPU, same chunks.

Chunks the first ``--docs`` NFCorpus documents as ``embed.py`` does, then embeds them (each after a
warm-up batch, same batch size, ``--threads`` threads) with:
  stage            the embed stage on torch, ``tasks.embed.Embedder`` with ``backend="torch"`` (bf16 autocast on
                   a bf16 CPU): the baseline this comparison chose OpenVINO over (``ov`` is what the stage
                   now runs by default; benchmarks/embed.py measures the stage itself)
  torch-fp32       raw ``SentenceTransformer.encode`` in fp32: the reference vectors
  st-openvino      sentence-transformers ``backend="openvino"``, default OpenVINO config (bf16 on a bf16 CPU)
  st-openvino-f32  the same with ``INFERENCE_PRECISION_HINT=f32``
  ort-fp32         ONNX Runtime on the model exported with ``torch.onnx`` (sentence-transformers'
                   ``backend="onnx"`` needs optimum-onnx, which no release allows with transformers 5)
  ort-int8         the same model, dynamically quantized to int8 (MatMul weights, per channel)
  ov, ov-f32       the OpenVINO runtime on that ONNX file, without optimum (default config, f32 hint)
The direct runtimes tokenize, sort by length, mean-pool and normalise as sentence-transformers does.
Prints passages/s, the ratio to the stage, and the min/mean cosine to the fp32 reference (and the min
to the stage's vectors). Exports are cached under ``--work``; ``--fresh`` re-exports (and times it).

Packages (none is in uv.lock; optimum-intel 2.2.0 caps transformers < 5.6 and huggingface-hub < 1.22,
so its ``uv run --with`` overlay runs every row on transformers 5.5.4, not the lock's version):
    uv run --frozen --with "optimum-intel[openvino]==2.2.0" python benchmarks/embed_backends.py --docs 600
    uv run --frozen --with openvino==2026.4.1 --with numpy==2.4.6 python benchmarks/embed_backends.py \\
        --docs 600 --backends ort-fp32,ort-int8,ov,ov-f32      # the lock's transformers, no optimum
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import importlib.metadata as metadata
import json
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from embed import chunks_of, timed  # the same chunks as embed.py; importing it puts the repo root on sys.path

from schemas.config import load_config
from tasks.embed import Embedder, passages
from tasks.models import load_tokenizer, resolve_model

REPO = Path(__file__).resolve().parents[1]
OV_PIN = "openvino==2026.4.1"
OPTIMUM_INTEL_PIN = "optimum-intel[openvino]==2.2.0"
# backend -> (modules it imports, the package that brings them)
NEEDS = {
    "st-openvino": (("optimum.intel.openvino",), OPTIMUM_INTEL_PIN),
    "st-openvino-f32": (("optimum.intel.openvino",), OPTIMUM_INTEL_PIN),
    "ort-fp32": (("onnxruntime", "onnx"), "onnxruntime (in uv.lock)"),
    "ort-int8": (("onnxruntime", "onnx", "onnxruntime.quantization"), "onnxruntime (in uv.lock)"),
    "ov": (("openvino",), OV_PIN),
    "ov-f32": (("openvino",), OV_PIN),
}


@dataclass
class Row:
    name: str
    load_s: float
    rate: float
    vectors: np.ndarray
    note: str = ""


def missing_packages(backends: list[str]) -> tuple[dict[str, str], dict[str, float]]:
    """Backend -> why it cannot load (its import error), and module -> seconds its first import took."""
    missing, import_s = {}, {}
    for name in backends:
        for module in NEEDS[name][0]:
            started = time.perf_counter()
            try:
                importlib.import_module(module)
            except Exception as exc:  # an ImportError, or a package that breaks on this transformers
                missing[name] = f"{module}: {type(exc).__name__}: {exc}"
                break
            import_s.setdefault(module, time.perf_counter() - started)
    return missing, import_s


def explain_missing(missing: dict[str, str], argv: list[str]) -> None:
    kept, skip = [], False
    for arg in argv:  # the user's arguments, less any --backends (the commands below choose their own)
        if skip or arg.startswith("--backends"):
            skip = arg == "--backends" and not skip
            continue
        kept.append(arg)
    args = " ".join(kept)
    direct = "ort-fp32,ort-int8,ov,ov-f32"
    print("embed_backends: these backends cannot load in this environment:", file=sys.stderr)
    for name, why in missing.items():
        print(f"  {name:<16} needs {NEEDS[name][1]}  ({why[:160]})", file=sys.stderr)
    print(f"\nAdd the packages for this run only (pyproject.toml and uv.lock stay as they are):\n"
          f'  uv run --frozen --with "{OPTIMUM_INTEL_PIN}" python benchmarks/embed_backends.py {args}\n'
          f"    all backends. Its overlay also brings transformers 5.5.4 and huggingface-hub 1.21.0, which\n"
          f"    shadow the lock's for the whole run (optimum-intel 2.2.0 caps transformers < 5.6 and fails to\n"
          f"    import on 5.25)\n"
          f"  uv run --frozen --with {OV_PIN} --with numpy==2.4.6 python benchmarks/embed_backends.py {args}"
          f" --backends {direct}\n"
          f"    the lock's transformers; OpenVINO runs directly, without sentence-transformers' backend\n"
          f"  uv run --frozen python benchmarks/embed_backends.py {args} --backends ort-fp32,ort-int8\n"
          f"    no extra package (onnx and onnxruntime are in uv.lock)", file=sys.stderr)


def versions() -> str:
    found = []
    for dist in ("torch", "transformers", "huggingface-hub", "sentence-transformers", "onnxruntime", "openvino",
                 "optimum-intel"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            found.append(f"{dist} {metadata.version(dist)}")
    locked = re.search(r'name = "transformers"\nversion = "([^"]+)"', (REPO / "uv.lock").read_text())
    note = ""
    if locked and locked.group(1) != metadata.version("transformers"):
        note = f"\nNOTE: transformers {metadata.version('transformers')} here, uv.lock pins {locked.group(1)}"
    return ", ".join(found) + note


def export_onnx(model_dir: str, work: Path, quantized: bool) -> Path:
    """The pipeline's ONNX export of the model (``tasks.embed_openvino.export_onnx``: fp32, dynamic batch
    and length, pooling and normalisation inside), or its int8 dynamic quantization."""
    folder = work / f"onnx-transformers-{metadata.version('transformers')}"  # the export traces transformers' code
    fp32, int8 = folder / "model.onnx", folder / "model_int8.onnx"
    if not fp32.exists():
        from tasks.embed_openvino import export_onnx as pipeline_export

        pipeline_export(model_dir, folder)
    if not quantized:
        return fp32
    if not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # per-channel weights: per-tensor (optimum's avx512_vnni default) lost far more (min cosine 0.93 vs 0.99)
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"], per_channel=True)
    return int8


class DirectEncoder:
    """Tokenize, sort by length, run a runtime on each batch (the graph pools), normalise."""

    def __init__(self, run: Callable[[dict[str, np.ndarray]], np.ndarray], model_dir: str, onnx_file: Path,
                 max_len: int, batch_size: int) -> None:
        from transformers import AutoTokenizer

        self.run, self.max_len, self.batch_size = run, max_len, batch_size
        self.inputs: list[str] = json.loads((onnx_file.parent / "inputs.json").read_text())  # the export's own
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def encode(self, texts: list[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts])
        out: np.ndarray | None = None
        for start in range(0, len(texts), self.batch_size):
            rows = order[start:start + self.batch_size]
            enc = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=self.max_len,
                                 return_tensors="np")
            vectors = self.run({name: enc[name].astype(np.int64) for name in self.inputs})
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
        return out if out is not None else np.empty((0, 0), dtype=np.float32)


def load_backend(name: str, model_dir: str, work: Path, threads: int, batch: int, max_len: int
                 ) -> tuple[Callable[[list[str]], np.ndarray], str]:
    """An encode function for ``name`` (after any export) and a note on what it runs."""
    if name.startswith("st-openvino"):
        from sentence_transformers import SentenceTransformer

        cached = work / "st-openvino"
        ov_config = {"INFERENCE_NUM_THREADS": threads}
        if name.endswith("f32"):
            ov_config["INFERENCE_PRECISION_HINT"] = "f32"
        exported = (cached / "openvino" / "openvino_model.xml").exists()
        model = SentenceTransformer(str(cached) if exported else model_dir, device="cpu", backend="openvino",
                                    model_kwargs={"ov_config": ov_config})
        if not exported:
            model.save_pretrained(str(cached))
        model.encode(["compile"])  # optimum-intel compiles on the first call
        compiled = getattr(model[0].auto_model, "request", None)
        precision = compiled.get_property("INFERENCE_PRECISION_HINT").to_string() if compiled else "?"
        note = f"{'exported' if not exported else 'cached IR'}, precision {precision}"
        return (lambda texts: model.encode(texts, batch_size=batch, normalize_embeddings=True)), note
    onnx_file = export_onnx(model_dir, work, quantized=name == "ort-int8")
    if name.startswith("ort"):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        encoder = DirectEncoder(lambda feed: session.run(None, feed)[0], model_dir, onnx_file, max_len, batch)
        return encoder.encode, f"onnxruntime {ort.__version__}"
    import openvino as ov

    config: dict[str, object] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if name == "ov-f32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    compiled = ov.Core().compile_model(str(onnx_file), "CPU", config)
    request = compiled.create_infer_request()
    encoder = DirectEncoder(lambda feed: request.infer(feed)[0], model_dir, onnx_file, max_len, batch)
    return encoder.encode, f"openvino, precision {compiled.get_property('INFERENCE_PRECISION_HINT').to_string()}"


def measure_stage(config: Any, runtime: Any, chunks: pa.Table) -> Row:
    started = time.perf_counter()
    stage = Embedder(config.embed_model, runtime.model_copy(update={"backend": "torch"}))
    stage.embed(chunks.slice(0, 64))  # warm-up: model load and first batches
    load_s = time.perf_counter() - started
    rate, vecs = timed(f"stage ({stage.precision} autocast)",
                       lambda: np.stack(stage.embed(chunks).column("vector").to_numpy(zero_copy_only=False)),
                       chunks.num_rows)
    return Row("stage", load_s, rate, vecs, f"torch {stage.precision} autocast")


def measure_torch_fp32(model_dir: str, texts: list[str], batch: int) -> Row:
    """The reference vectors: raw encode in fp32, as a user would call it (but at the stage's batch size)."""
    import torch
    from sentence_transformers import SentenceTransformer

    started = time.perf_counter()
    raw = SentenceTransformer(model_dir, device="cpu")
    raw.encode(texts[:64], batch_size=batch)
    load_s = time.perf_counter() - started
    with torch.inference_mode():
        rate, vecs = timed("torch-fp32 (reference)",
                           lambda: raw.encode(texts, batch_size=batch, normalize_embeddings=True), len(texts))
    return Row("torch-fp32", load_s, rate, vecs, "torch fp32")


def measure_backend(name: str, texts: list[str], model_dir: str, work: Path, threads: int, batch: int,
                    max_len: int) -> Row:
    started = time.perf_counter()
    encode, note = load_backend(name, model_dir, work, threads, batch, max_len)
    encode(texts[:64])  # warm-up: compile and first batch
    load_s = time.perf_counter() - started
    rate, vecs = timed(f"{name} ({note})", lambda: encode(texts), len(texts))
    return Row(name, load_s, rate, vecs, note)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--beir", type=Path, default=Path("../shared/data/beir/nfcorpus"))
    parser.add_argument("--docs", type=int, default=600)
    parser.add_argument("--work", type=Path, default=Path("/tmp/hw-embed-backends"),
                        help="exported models are cached here (never in the repository)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the embed stage's (64)")
    parser.add_argument("--backends", default=",".join(NEEDS),
                        help="comma-separated, besides stage and torch-fp32 (always run): " + ", ".join(NEEDS))
    parser.add_argument("--fresh", action="store_true", help="delete the cached exports first (times the export)")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if unknown := [b for b in backends if b not in NEEDS]:
        parser.error(f"unknown backends {unknown}; choose from {list(NEEDS)}")
    import torch  # first, so that the import times below are the backends' own

    missing, import_s = missing_packages(backends)
    if missing:
        explain_missing(missing, sys.argv[1:])
        return 2
    if args.fresh:  # only what this script writes there
        for cached in [args.work / "st-openvino", *args.work.glob("onnx-transformers-*")]:
            shutil.rmtree(cached, ignore_errors=True)
    args.work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    config = load_config()
    runtime = config.embed.model_copy(update={"threads": args.threads,
                                              "batch_size": args.batch_size or config.embed.batch_size})
    chunks = chunks_of(args.beir, args.docs, config)
    texts = passages(chunks, config.embed_model.context)
    model_dir = resolve_model(config.embed_model.model)
    n, batch = chunks.num_rows, runtime.batch_size
    print(f"{n} chunks of {args.docs} documents; batch {batch}; {args.threads} threads\n{versions()}\n"
          f"first imports: " + ", ".join(f"{m} {secs:.1f} s" for m, secs in import_s.items()), flush=True)

    rows = [measure_stage(config, runtime, chunks), measure_torch_fp32(model_dir, texts, batch)]
    max_len = load_tokenizer(config.embed_model.model)[1]  # what encode truncates to (256)
    failed = []
    for name in backends:
        try:
            rows.append(measure_backend(name, texts, model_dir, args.work, args.threads, batch, max_len))
        except Exception as exc:  # report and go on: one backend's failure says nothing of the others
            print(f"{name}: FAILED {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            failed.append(name)
        gc.collect()

    print_table(rows)
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def print_table(rows: list[Row]) -> None:
    """Markdown table; rows[0] is the stage, rows[1] the fp32 reference."""
    reference, stage_vecs = rows[1].vectors, rows[0].vectors
    print("\n| backend | what runs | load+warm-up s | passages/s | vs stage | min cos fp32 | mean cos fp32 | "
          "min cos stage |\n|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        cos_ref = np.sum(row.vectors * reference, axis=1)
        cos_stage = np.sum(row.vectors * stage_vecs, axis=1)
        print(f"| {row.name} | {row.note} | {row.load_s:.1f} | {row.rate:.1f} | {row.rate / rows[0].rate:.2f}x | "
              f"{cos_ref.min():.5f} | {cos_ref.mean():.6f} | {cos_stage.min():.5f} |")


if __name__ == "__main__":
    sys.exit(main())

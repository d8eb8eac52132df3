"""The embed stage's OpenVINO CPU backend: the sentence-transformers model exported once to ONNX, run by
the OpenVINO runtime.

The exported graph is the whole model after tokenization (the transformer, then its pooling, dense and
normalize modules as the model declares them), and texts are tokenized by the model's own
``preprocess``, so the vectors are the model's. Each load is checked against torch on a few probe texts
before it is used. Measured on a 2-core bf16 CPU: 1.37x the torch bf16 stage at cosine >= 0.99997 to
fp32 (benchmarks/README.md).

Only the runtime is used (``Core.read_model`` and ``compile_model``); OpenVINO's model converter, which
sends telemetry where a user has opted in, is not.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

EXPORT_FORMAT = 1  # part of the cache key: bump when export_onnx changes what it writes
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
MIN_COSINE = 0.999  # to torch fp32 on the probes; bf16 measures >= 0.9999
PROBES = [
    "Rivers carry sediment to the sea.",
    "a",
    "Configuration files live under /etc; the daemon reads them at start-up and on SIGHUP. " * 3,
    "Long passage to be truncated: " + "the quick brown fox jumps over the lazy dog " * 80,
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich.",
]


class ExportUnsupported(RuntimeError):
    """This model cannot run on the OpenVINO backend (its structure, or vectors that do not match torch)."""


def cache_key(location: str, model: Any) -> str:
    """A key that changes with the model's files and the versions that shape the export.

    By content, never by path: under Ray the same model is installed anew in each job's environment.
    Small files (configs, tokenizer) are hashed whole; weights by size and their first and last MiB.
    """
    parts: dict[str, Any] = {"format": EXPORT_FORMAT, "max_seq_length": model.max_seq_length,
                             "versions": {dist: metadata.version(dist) for dist in
                                          ("torch", "transformers", "sentence-transformers", "openvino")}}
    inner = getattr(model[0], "model", None)  # the transformers model: where its files really are
    source = Path(getattr(inner, "name_or_path", "") or location)
    if source.is_dir():
        parts["files"] = sorted((p.relative_to(source).as_posix(), p.stat().st_size, _fingerprint(p))
                                for p in source.rglob("*") if p.is_file())
    else:  # a hub name resolved from the user's cache: the name is all there is
        parts["source"] = str(source)
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _fingerprint(path: Path, edge: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        if path.stat().st_size <= 16 * edge:
            digest.update(fh.read())
        else:
            digest.update(fh.read(edge))
            fh.seek(-edge, 2)
            digest.update(fh.read(edge))
    return digest.hexdigest()


def _input_names(model: Any) -> list[str]:
    import torch

    features = model.preprocess(["probe"])
    return [name for name, value in features.items() if isinstance(value, torch.Tensor)]


def export_onnx(location: str, target: Path) -> Path:
    """Export the model at ``location`` to ``target``/model.onnx (written elsewhere, then moved in whole,
    so that actors exporting at once never read a partial file)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules.transformer import Transformer

    # eager attention traces cleanly; the same weights as the model the stage loads
    model = SentenceTransformer(location, device="cpu", model_kwargs={"attn_implementation": "eager"}).eval()
    if not isinstance(model[0], Transformer):
        raise ExportUnsupported(f"the model's first module is {type(model[0]).__name__}, not a Transformer")
    names = _input_names(model)
    if "attention_mask" not in names:
        raise ExportUnsupported(f"the model's inputs {names} have no attention_mask")

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stack = torch.nn.ModuleList(list(model))

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            features: dict[str, Any] = dict(zip(names, inputs, strict=True))
            features["modality"] = "text"
            mask = features["attention_mask"]
            # A ready 4D additive mask: transformers passes it through, where building its own from the
            # 2D mask fails to trace or is traced as a constant. Pooling still reads the 2D mask.
            additive = (1.0 - mask[:, None, None, :].to(torch.float32)) * torch.finfo(torch.float32).min
            features = self.stack[0](features, attention_mask=additive)
            for module in self.stack[1:]:
                features = module(features)
            return features["sentence_embedding"]

    example = model.preprocess(["An example sentence that is longer than the other one.", "Short."])
    axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"sentence_embedding": {0: "batch"}}
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-"))
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's notices (the new one needs onnxscript)
            torch.onnx.export(Graph().eval(), tuple(example[name] for name in names), str(scratch / "model.onnx"),
                              input_names=names, output_names=["sentence_embedding"], dynamic_axes=axes,
                              opset_version=17, dynamo=False)
        (scratch / "inputs.json").write_text(json.dumps(names))
        scratch.chmod(0o755)  # mkdtemp's is 0700
        try:
            scratch.rename(target)
        except OSError:  # another actor finished first: its export is the same
            if not (target / "model.onnx").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target / "model.onnx"


class OpenVINOEncoder:
    """Encodes texts with the exported model; compiled once per thread count."""

    def __init__(self, model: Any, name: str, location: str, cache_dir: Path, precision: str, threads: int) -> None:
        import openvino as ov

        self.model = model
        self.precision = precision
        self.threads = threads
        slug = re.sub(r"[^A-Za-z0-9.-]+", "_", name).strip("_.") or "model"
        folder = cache_dir / f"{slug}-{cache_key(location, model)}"
        onnx_file = folder / "model.onnx"
        if not onnx_file.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            export_onnx(location, folder)
        self.input_names: list[str] = json.loads((folder / "inputs.json").read_text())
        self.folder = folder
        self._core = ov.Core()
        self._graph = self._core.read_model(str(onnx_file))
        self._requests: dict[int, Any] = {}
        self.check()

    def _request(self) -> Any:
        request = self._requests.get(self.threads)
        if request is None:
            compiled = self._core.compile_model(self._graph, "CPU", {
                "INFERENCE_NUM_THREADS": self.threads,
                "INFERENCE_PRECISION_HINT": OV_PRECISION[self.precision],
                "PERFORMANCE_HINT": "LATENCY",
                "ENABLE_CPU_PINNING": False,  # the parsers share these cores: let the kernel place threads
            })
            request = self._requests[self.threads] = compiled.create_infer_request()
        return request

    def encode(self, texts: list[str], batch_size: int) -> np.ndarray:
        """One vector per text, in order; batches of similar length (as sentence-transformers sorts)."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        request = self._request()
        out: np.ndarray | None = None
        for start in range(0, len(texts), batch_size):
            rows = order[start:start + batch_size]
            features = self.model.preprocess([texts[i] for i in rows])
            vectors = request.infer({name: features[name].numpy() for name in self.input_names})[0]
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[rows] = vectors
        return out if out is not None else np.empty((0, self.model.get_embedding_dimension()), dtype=np.float32)

    def check(self) -> None:
        """Raise ExportUnsupported unless the probes' vectors match torch fp32 (cosine >= MIN_COSINE)."""
        import torch

        with torch.inference_mode():
            reference = self.model.encode(PROBES, convert_to_numpy=True, normalize_embeddings=True,
                                           show_progress_bar=False)
        ours = self.encode(PROBES, batch_size=len(PROBES))
        ours = ours / np.clip(np.linalg.norm(ours, axis=1, keepdims=True), 1e-12, None)
        cosine = float(np.min(np.sum(reference * ours, axis=1)))
        if not cosine >= MIN_COSINE:
            raise ExportUnsupported(f"OpenVINO vectors differ from torch (min cosine {cosine:.5f} < {MIN_COSINE})")

"""Embed: CHUNK rows -> EMBEDDED_CHUNK rows with a sentence-transformers model. No IO.

Cheap to construct; the model loads once in :meth:`Embedder.warm_up` (a Ray actor calls it
once per process). Reduced precision is a ~3x lever on CPUs with native bf16 and on GPUs,
at no measurable quality cost (see PERF_FACTS); it is chosen, never silently degraded. On a
CPU the model runs on OpenVINO by default (``tasks.embed_openvino``), 1.37x torch at the same
precision; torch stays the fallback and the CUDA path.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

import numpy as np
import pyarrow as pa

from schemas.config import EmbedModelConfig, EmbedRuntimeConfig
from schemas.records import CHUNK, EMBEDDED_CHUNK, check_table
from tasks.models import resolve_model

STAGE = "embed"
CUDA_TOKEN_BUDGET = 16384
_log = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class Embedder:
    """Encodes chunk text into vectors, batching across documents."""

    def __init__(self, model: EmbedModelConfig, runtime: EmbedRuntimeConfig) -> None:
        self.model_config = model
        self.runtime = runtime
        self._model: Any = None
        self._openvino: Any = None
        self.device = "cpu"
        self.precision = "fp32"
        self.backend = "torch"

    def warm_up(self) -> None:
        if self._model is not None:
            return
        import torch
        from sentence_transformers import SentenceTransformer

        self.device = self.runtime.device
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cpu":
            self.set_threads(self.runtime.threads or os.cpu_count() or 1)
        self.precision = self._choose_precision()
        location = resolve_model(self.model_config.model)
        model = SentenceTransformer(location, device=self.device)
        if self.device == "cuda" and self.precision == "fp16":
            model.half()
        self._model = model
        if self.device == "cpu" and self.runtime.backend in ("auto", "openvino"):
            self._load_openvino(location)

    def _load_openvino(self, location: str) -> None:
        import torch

        from tasks.embed_openvino import ExportUnsupported, OpenVINOEncoder

        try:
            self._openvino = OpenVINOEncoder(self._model, self.model_config.model, location, self.runtime.cache_dir,
                                             self.precision, torch.get_num_threads())
        except Exception as exc:  # an export, compile or check failure: each means torch for 'auto'
            if self.runtime.backend == "openvino":
                raise ExportUnsupported(f"embed.backend 'openvino' cannot run {self.model_config.model}: "
                                        f"{type(exc).__name__}: {exc}") from exc
            _log.warning("embedding %s with torch: the OpenVINO backend cannot run it (%s)",
                         self.model_config.model, exc)
            return
        self.backend = "openvino"

    def set_threads(self, threads: int) -> None:
        """CPU threads for the next encodes (torch oversubscribed by other work runs far slower)."""
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if self._openvino is not None:
            self._openvino.threads = threads

    def _choose_precision(self) -> str:
        if self.runtime.precision != "auto":
            return self.runtime.precision
        if self.device == "cuda":
            return "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"

    def describe(self) -> str:
        """How it runs, e.g. ``openvino bf16 on cpu``."""
        self.warm_up()
        return f"{self.backend} {self.precision} on {self.device}"

    @property
    def dimensions(self) -> int:
        self.warm_up()
        return int(self._model.get_embedding_dimension())

    @property
    def token_budget(self) -> int | None:
        if self.runtime.token_budget is not None:
            return self.runtime.token_budget
        return CUDA_TOKEN_BUDGET if self.device == "cuda" else None

    def encode(self, texts: list[str]) -> np.ndarray:
        """Vectors (float32, one row per text, in order).

        Fixed batches of ``batch_size`` (sentence-transformers sorts by length inside), or with a
        token budget, length-sorted batches of as many rows as fit: on a GPU, short passages then
        fill large batches while long ones do not run out of memory.
        """
        self.warm_up()
        import torch

        autocast: Any = contextlib.nullcontext()
        if self.backend == "torch" and self.device == "cpu" and self.precision == "bf16":
            autocast = torch.autocast("cpu", dtype=torch.bfloat16)
        budget = self.token_budget
        groups = [list(range(len(texts)))] if budget is None or not texts else \
            budget_batches(self.token_lengths(texts), budget, self.runtime.batch_size)
        out = np.empty((len(texts), self.dimensions), dtype=np.float32)
        with torch.inference_mode(), autocast:
            for group in groups:
                batch = [texts[i] for i in group]
                size = self.runtime.batch_size if budget is None else len(group)
                if self._openvino is not None:
                    out[group] = self._openvino.encode(batch, size)
                else:
                    out[group] = self._model.encode(batch, batch_size=size, convert_to_numpy=True,
                                                    normalize_embeddings=False, show_progress_bar=False)
        if self.model_config.normalize:
            out /= np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)
        return out

    def token_lengths(self, texts: list[str]) -> list[int]:
        """Model tokens per text (special tokens included), capped at the model's sequence length."""
        self.warm_up()
        limit = self._model.max_seq_length
        ids = self._model.tokenizer(texts, add_special_tokens=True, truncation=True, max_length=limit)["input_ids"]
        return [len(x) for x in ids]

    def embed(self, chunks: pa.Table) -> pa.Table:
        """Add a ``vector`` column to a CHUNK table.

        Raises:
            ContractError: ``chunks`` is not a CHUNK table.
        """
        chunks = check_table(chunks, CHUNK, STAGE)
        if chunks.num_rows == 0:
            return EMBEDDED_CHUNK.empty_table()
        return with_vectors(chunks, self.encode(passages(chunks, self.model_config.context)))


def budget_batches(lengths: list[int], budget: int, max_rows: int) -> list[list[int]]:
    """Indices grouped longest first, each group's padded size (rows x its longest) within ``budget``
    tokens and at most ``max_rows`` rows; a single text longer than the budget gets a group alone."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    groups: list[list[int]] = []
    for i in order:
        group = groups[-1] if groups else None
        if group is None or len(group) >= max_rows or lengths[group[0]] * (len(group) + 1) > budget:
            groups.append([i])
        else:
            group.append(i)
    return groups


def passages(chunks: pa.Table, context: str) -> list[str]:
    """The text embedded for each chunk: the text, or with ``context="title"`` its document title
    first (unless the chunk already starts with it), so a later chunk still says what it is about."""
    texts = chunks.column("text").to_pylist()
    if context != "title":
        return texts
    titles = chunks.column("title").to_pylist()
    return [t if not title or t.startswith(title) else f"{title}\n\n{t}"
            for t, title in zip(texts, titles, strict=True)]


def with_vectors(chunks: pa.Table, vectors: np.ndarray | list[list[float]]) -> pa.Table:
    """A CHUNK table plus its ``vector`` column (one vector per row, in row order)."""
    matrix = np.asarray(vectors, dtype=np.float32).reshape(chunks.num_rows, -1)
    flat = pa.array(matrix.reshape(-1), type=pa.float32())
    offsets = pa.array(np.arange(0, matrix.size + 1, max(matrix.shape[1], 1), dtype=np.int32)[: chunks.num_rows + 1])
    return chunks.append_column(EMBEDDED_CHUNK.field("vector"), pa.ListArray.from_arrays(offsets, flat))

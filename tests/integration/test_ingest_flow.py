"""End to end: ingest_flow on real Weaviate, real local Ray and Prefect's test harness."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.ingest import ingest_flow
from infra.weaviate.connection import WeaviateEndpoint, weaviate_client
from tasks.embed import Embedder
from tasks.index import count_objects
from tasks.search import search
from tests.conftest import make_config

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    from schemas.config import EmbedModelConfig, EmbedRuntimeConfig

    return Embedder(EmbedModelConfig(), EmbedRuntimeConfig())


def _top_files(client, collection: str, query: str, mode: str, embedder: Embedder) -> list[str]:  # type: ignore[no-untyped-def]
    return [Path(h.source_uri).name for h in search(client, collection, query, mode, 3, embedder)]  # type: ignore[arg-type]


def test_ingest_search_rerun_and_edit(
    corpus: dict[str, Path], tmp_path: Path, weaviate_endpoint: WeaviateEndpoint,
    ray_local: None, prefect_harness: None, embedder: Embedder,
) -> None:
    config = make_config(tmp_path, weaviate_endpoint, index={"collection": "IngestE2E"})
    root = str(corpus["hockey.md"].parent)

    first = ingest_flow(root, config)
    assert first.documents_seen == 8
    assert first.documents_added == 5  # md, html, txt, rst, man page
    assert first.documents_failed == 3  # empty.txt, broken.docx, image.png
    failed = {Path(e["source_uri"]).name: (e["stage"], e["error_type"]) for e in first.errors}
    assert failed == {"empty.txt": ("parse", "EmptyDocument"), "broken.docx": ("parse", failed["broken.docx"][1]),
                      "image.png": ("discover", "UnsupportedFileType")}
    assert first.chunks >= 5 and first.objects_written == first.chunks == first.chunks_embedded
    assert first.objects_in_collection == first.chunks
    assert set(first.stage_seconds) >= {"plan", "parse", "chunk", "embed", "index"}
    # the Ray embed actor ran what a local Embedder picks here: OpenVINO on a CPU, torch on CUDA
    assert first.embed_runtime == embedder.describe()
    assert embedder.backend == ("torch" if embedder.device == "cuda" else "openvino")

    with weaviate_client(weaviate_endpoint) as client:
        for mode in ("bm25", "vector", "hybrid"):
            assert _top_files(client, "IngestE2E", "Stanley Cup hockey champions", mode, embedder)[0] == "hockey.md"
            top = _top_files(client, "IngestE2E", "fermented flour and water starter", mode, embedder)
            assert top[0] == "bread.html"
        assert _top_files(client, "IngestE2E", "quantum flux widget", "bm25", embedder)[0] == "frobnicate.1.gz"
        hit = search(client, "IngestE2E", "Montreal Canadiens", "bm25", 1)[0]
        assert hit.title == "Stanley Cup history" and hit.section.startswith("Stanley Cup history")

    second = ingest_flow(root, config)
    assert second.objects_in_collection == first.objects_in_collection  # no duplicates
    assert second.documents_unchanged == 5 and second.documents_added == 0
    assert second.chunks_embedded == 0 and second.chunks_deleted == 0

    corpus["hockey.md"].write_text("# Stanley Cup history\n\nThe Toronto Maple Leafs last won the cup in 1967.\n")
    third = ingest_flow(root, config)
    with weaviate_client(weaviate_endpoint) as client:
        assert third.documents_modified == 1 and third.documents_unchanged == 4
        assert (third.chunks, third.chunks_embedded, third.chunks_deleted) == (1, 1, 1)  # one short doc
        total = count_objects(client, "IngestE2E")
        assert total == third.objects_in_collection == first.objects_in_collection
        assert not search(client, "IngestE2E", "Montreal Canadiens", "bm25", 5)
        assert _top_files(client, "IngestE2E", "Maple Leafs 1967", "bm25", embedder)[0] == "hockey.md"


def test_bad_source_is_a_clear_error(tmp_path: Path, prefect_harness: None) -> None:
    config = make_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ingest_flow(str(tmp_path / "missing"), config)

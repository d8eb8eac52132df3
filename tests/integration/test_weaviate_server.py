"""The embedded server: real binary, free ports, persistent data, clean stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.weaviate.connection import WeaviateEndpoint, weaviate_client
from infra.weaviate.server import HOST, EmbeddedWeaviate
from schemas.collection import ensure_collection
from schemas.config import WEAVIATE_VERSION

pytestmark = pytest.mark.integration


def _endpoint(state) -> WeaviateEndpoint:  # type: ignore[no-untyped-def]
    return WeaviateEndpoint(HOST, state.ports["http"], False, HOST, state.ports["grpc"], False)


def test_two_servers_never_collide_and_data_survives_restart(weaviate_binary: Path, tmp_path: Path) -> None:
    a = EmbeddedWeaviate(tmp_path / "a", weaviate_binary, WEAVIATE_VERSION)
    b = EmbeddedWeaviate(tmp_path / "b", weaviate_binary, WEAVIATE_VERSION)
    state_a, started_a = a.start()
    try:
        state_b, started_b = b.start()
        try:
            assert started_a and started_b
            assert not set(state_a.ports.values()) & set(state_b.ports.values())
            assert len(set(state_a.ports.values())) == 7
            assert a.ready(state_a) and b.ready(state_b)
            with weaviate_client(_endpoint(state_a)) as client:
                coll = ensure_collection(client, "Persisted")
                coll.data.insert({"text": "kept across restarts"}, vector={"default": [0.1] * 4})
            again, started_again = a.start()  # already running: reused, not restarted
            assert not started_again and again.pid == state_a.pid
        finally:
            assert b.stop()
    finally:
        assert a.stop()
    assert a.running() is None and not a.stop()

    restarted, _ = a.start()
    try:
        assert restarted.ports == state_a.ports  # same Raft address after restart
        with weaviate_client(_endpoint(restarted)) as client:
            coll = client.collections.use("Persisted")
            assert coll.aggregate.over_all(total_count=True).total_count == 1
    finally:
        a.stop()


def test_collection_schema_is_bm25_ready(weaviate_endpoint: WeaviateEndpoint) -> None:
    with weaviate_client(weaviate_endpoint) as client:
        ensure_collection(client, "SchemaCheck")
        config = client.collections.use("SchemaCheck").config.get()
        props = {p.name: p for p in config.properties}
        assert props["text"].tokenization.value == "word" and props["text"].index_searchable
        assert props["source_uri"].tokenization.value == "field" and props["source_uri"].index_filterable
        assert not props["doc_id"].index_searchable
        assert {"title", "section", "chunk_index", "content_sha256", "page_number", "mime_type",
                "ingested_at"} <= set(props)
        assert config.vector_config["default"].vectorizer.vectorizer.value == "none"
        ensure_collection(client, "SchemaCheck")  # idempotent on a matching collection

"""Freshness against the real Weaviate: change detection, chunk reuse, guard, verify."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.ingest import ingest_flow
from infra.weaviate.connection import WeaviateEndpoint, weaviate_client
from tasks.verify import audit_index
from tests.conftest import make_config, write_corpus

pytestmark = pytest.mark.integration

LONG = "\n\n".join(
    f"Paragraph {i}. " + " ".join(f"word{i}x{j}" for j in range(40)) for i in range(8)
)


def objects(endpoint: WeaviateEndpoint, collection: str) -> dict[str, tuple[str, str, str]]:
    """uuid -> (source file name, text, ingested_at) of every object."""
    with weaviate_client(endpoint) as client:
        return {
            str(o.uuid): (Path(str(o.properties["source_uri"])).name, str(o.properties["text"]),
                          str(o.properties["ingested_at"]))
            for o in client.collections.use(collection).iterator(return_properties=["source_uri", "text",
                                                                                    "ingested_at"])
        }


def assert_clean(endpoint: WeaviateEndpoint, collection: str) -> None:
    with weaviate_client(endpoint) as client:
        audit = audit_index(client, collection)
    assert audit.clean, audit.rows()


def test_changes_reach_the_index_and_only_edited_chunks_are_embedded(
    tmp_path: Path, weaviate_endpoint: WeaviateEndpoint, ray_local: None, prefect_harness: None,
) -> None:
    root = tmp_path / "corpus"
    files = write_corpus(root)
    (root / "long.txt").write_text(LONG)
    config = make_config(tmp_path, weaviate_endpoint, index={"collection": "Fresh"})

    first = ingest_flow(str(root), config)
    assert first.documents_added == 6 and first.chunks_embedded == first.chunks > 6
    assert_clean(weaviate_endpoint, "Fresh")
    before = objects(weaviate_endpoint, "Fresh")

    noop = ingest_flow(str(root), config)  # nothing changed: nothing embedded, nothing written
    assert (noop.documents_unchanged, noop.chunks_embedded, noop.objects_written, noop.chunks_deleted) == (6, 0, 0, 0)
    assert objects(weaviate_endpoint, "Fresh") == before  # same objects, same ingested_at

    long_ids = {u for u, (name, _, _) in before.items() if name == "long.txt"}
    (root / "long.txt").write_text(LONG.replace("Paragraph 3.", "Paragraph three, rewritten."))
    files["volcano.txt"].rename(root / "renamed-volcano.txt")
    files["bread.html"].unlink()
    (root / "new.md").write_text("# Glaciers\n\nGlaciers carve U-shaped valleys as they move.\n")
    second = ingest_flow(str(root), config)
    assert (second.documents_added, second.documents_modified, second.documents_renamed,
            second.documents_deleted, second.documents_unchanged) == (1, 1, 1, 1, 3)
    # Only chunks touching the rewritten paragraph change; every other chunk keeps id and vector.
    touched = {u for u in long_ids if "Paragraph 3." in before[u][1] or "word3x" in before[u][1]}
    assert 0 < len(touched) < len(long_ids) // 2
    after = objects(weaviate_endpoint, "Fresh")
    kept = long_ids & set(after)
    assert kept >= long_ids - touched
    assert second.chunks_reused == len(kept)
    new_long = {u for u, (name, _, _) in after.items() if name == "long.txt"} - long_ids
    assert second.chunks_embedded == len(new_long) + 1  # + the one chunk of new.md
    assert second.chunks_deleted == len(long_ids - kept) + 1 + 1  # replaced, bread.html, old volcano.txt
    names = {name for name, _, _ in after.values()}
    assert "renamed-volcano.txt" in names and "volcano.txt" not in names
    assert "bread.html" not in names and "new.md" in names
    assert any("Paragraph three, rewritten." in text for _, text, _ in after.values())
    assert_clean(weaviate_endpoint, "Fresh")


def test_mass_delete_guard_and_verify_repair(
    tmp_path: Path, weaviate_endpoint: WeaviateEndpoint, ray_local: None, prefect_harness: None,
) -> None:
    root = tmp_path / "corpus"
    files = write_corpus(root)
    config = make_config(tmp_path, weaviate_endpoint, index={"collection": "Guarded"})
    ingest_flow(str(root), config)
    count = len(objects(weaviate_endpoint, "Guarded"))
    for name in ("hockey.md", "bread.html"):  # 2 of 5 indexed sources: 40 % > 20 %
        files[name].unlink()
    refused = ingest_flow(str(root), config)
    assert refused.deletion_refused and "--allow-mass-delete" in refused.deletion_refused
    assert refused.documents_deleted == 0 and len(objects(weaviate_endpoint, "Guarded")) == count
    allowed = ingest_flow(str(root), config, allow_mass_delete=True)
    assert allowed.documents_deleted == 2 and allowed.deletion_refused is None
    assert_clean(weaviate_endpoint, "Guarded")

    with weaviate_client(weaviate_endpoint) as client:  # damage the index behind Headwater's back
        from tasks.verify import repair_index

        coll = client.collections.use("Guarded")
        victim = next(iter(coll.iterator(return_properties=["doc_id"])))
        coll.data.delete_by_id(victim.uuid)
        coll.data.insert({"doc_id": "nobody", "text": "orphan"}, vector={"default": [0.0] * 383 + [1.0]})
        audit = audit_index(client, "Guarded")
        assert not audit.clean and len(audit.orphans) == 1 and sum(map(len, audit.missing.values())) == 1
        repair_index(client, "Guarded", audit)
    ingest_flow(str(root), config)  # the forgotten source is rebuilt
    assert_clean(weaviate_endpoint, "Guarded")

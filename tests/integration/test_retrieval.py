"""Retrieval: chunker strategies end to end, query options, re-ranking, BEIR evaluation, drift."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from flows.drift import RelevanceDrift, drift_flow, golden_set
from flows.evaluate import eval_flow
from flows.ingest import ingest_flow
from infra.weaviate.connection import WeaviateEndpoint, weaviate_client
from tasks.search import CrossEncoderReranker, search
from tests.conftest import make_config, write_corpus

pytestmark = pytest.mark.integration


def test_structure_chunker_keeps_sections_apart_end_to_end(
    tmp_path: Path, weaviate_endpoint: WeaviateEndpoint, ray_local: None, prefect_harness: None,
) -> None:
    root = tmp_path / "corpus"
    write_corpus(root)
    config = make_config(tmp_path, weaviate_endpoint, chunk={"strategy": "structure", "size_tokens": 128,
                                                              "overlap_tokens": 0}, index={"collection": "Structured"})
    ingest_flow(str(root), config)
    with weaviate_client(weaviate_endpoint) as client:
        hockey = [o.properties for o in client.collections.use("Structured").iterator(
            return_properties=["source_uri", "section", "text", "chunk_index"]) if
            str(o.properties["source_uri"]).endswith("hockey.md")]
    by_index = sorted(hockey, key=lambda p: p["chunk_index"])
    assert [p["section"] for p in by_index] == ["Stanley Cup history", "Stanley Cup history > Winners"]
    assert "Montreal" in by_index[1]["text"] and "Montreal" not in by_index[0]["text"]


class PreferMontreal:
    """A deterministic re-ranker: any Reranker works."""

    def score(self, query: str, passages: list[str]) -> list[float]:
        return [1.0 if "Montreal" in p else 0.0 for p in passages]


def test_query_options_boosts_fusion_and_rerankers(
    tmp_path: Path, weaviate_endpoint: WeaviateEndpoint, ray_local: None, prefect_harness: None,
) -> None:
    root = tmp_path / "corpus"
    write_corpus(root)
    config = make_config(tmp_path, weaviate_endpoint, index={"collection": "Queried"})
    ingest_flow(str(root), config)
    from tasks.embed import Embedder

    embedder = Embedder(config.embed_model, config.embed)
    with weaviate_client(weaviate_endpoint) as client:
        for fusion in ("ranked", "relative_score"):
            hits = search(client, "Queried", "Stanley Cup trophy", "hybrid", 3, embedder, 0.5, fusion=fusion)
            assert Path(hits[0].source_uri).name == "hockey.md"
        plain = search(client, "Queried", "sourdough", "bm25", 5, properties=("text",))
        boosted = search(client, "Queried", "sourdough", "bm25", 5, properties=("text", "title^5"))
        assert boosted[0].score > plain[0].score  # the title matches too, and weighs five times
        reranked = search(client, "Queried", "Stanley Cup", "bm25", 2, reranker=PreferMontreal(), rerank_top=10)
        assert "Montreal" in reranked[0].text and reranked[0].rerank_score == 1.0
        assert reranked[0].search_score > 0
        # What LangChain's and LlamaIndex's Weaviate stores send: the alias, the text property, no
        # target vector (the collection's one named vector answers).
        vector = embedder.encode(["shield volcano lava"])[0].tolist()
        plain_store = client.collections.use("Queried").query.near_vector(vector, limit=1, return_properties=["text"])
        assert "Mauna Loa" in str(plain_store.objects[0].properties["text"])
        # A real CrossEncoder adapter, loaded offline (from the packaged MiniLM weights: an untrained
        # head, so only the plumbing is checked here, not the quality of its order).
        cross = CrossEncoderReranker("all-MiniLM-L6-v2")
        hits = search(client, "Queried", "volcano lava", "bm25", 3, reranker=cross, rerank_top=5)
        assert hits and all(h.rerank_score is not None for h in hits)
        assert [h.rerank_score for h in hits] == sorted((h.rerank_score for h in hits), reverse=True)


@pytest.mark.data
def test_eval_on_a_small_beir_sample(
    tmp_path: Path, shared_data: Path, weaviate_endpoint: WeaviateEndpoint, ray_local: None, prefect_harness: None,
) -> None:
    beir = shared_data / "beir" / "nfcorpus"
    mini = _mini_beir(beir, tmp_path / "mini", queries=25, extra_docs=150)
    config = make_config(tmp_path, weaviate_endpoint, chunk={"size_tokens": 256, "overlap_tokens": 32},
                         index={"collection": "EvalMini"})
    result = eval_flow(str(mini), config, work=str(tmp_path / "docs"), out=str(tmp_path / "out"))
    modes = {r["mode"]: r for r in result["rows"]}
    assert set(modes) == {"bm25", "vector", "hybrid α=0.5"} and result["queries"] == 25
    for row in modes.values():
        assert 0.2 < row["nDCG@10"] <= 1 and 0 < row["MRR@10"] <= 1 and 0.1 < row["Recall@100"] <= 1
    parity = result["bm25_parity"]
    assert abs(parity["weaviate_ndcg@10"] - parity["rank_bm25_ndcg@10"]) < 0.05 and parity["overlap@10"] > 0.7
    assert json.loads((tmp_path / "out" / "eval-EvalMini.json").read_text())["rows"] == result["rows"]
    assert "| bm25 |" in (tmp_path / "out" / "eval-EvalMini.md").read_text()


def _mini_beir(beir: Path, out: Path, queries: int, extra_docs: int) -> Path:
    """The first ``queries`` test queries, their judged documents and some random others."""
    lines = (beir / "qrels" / "test.tsv").read_text().splitlines()[1:]
    qrels: dict[str, list[str]] = {}
    for line in lines:
        q = line.split("\t")[0]
        qrels.setdefault(q, []).append(line)
    chosen = list(qrels)[:queries]
    judged = {line.split("\t")[1] for q in chosen for line in qrels[q]}
    corpus = [json.loads(line) for line in (beir / "corpus.jsonl").open()]
    others = [d for d in corpus if d["_id"] not in judged]
    keep = judged | {d["_id"] for d in random.Random(3).sample(others, extra_docs)}
    (out / "qrels").mkdir(parents=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus if d["_id"] in keep))
    (out / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        line + "\n" for q in chosen for line in qrels[q]))
    qs = [line for line in (beir / "queries.jsonl").open() if json.loads(line)["_id"] in set(chosen)]
    (out / "queries.jsonl").write_text("".join(qs))
    return out


def test_drift_flow_passes_then_fails_when_relevance_drops(
    tmp_path: Path, weaviate_endpoint: WeaviateEndpoint, ray_local: None, prefect_harness: None,
) -> None:
    root = tmp_path / "corpus"
    write_corpus(root)
    config = make_config(tmp_path, weaviate_endpoint, index={"collection": "Drifting"})
    ingest_flow(str(root), config)
    golden = tmp_path / "golden.json"
    queries = {"q1": "Stanley Cup champions", "q2": "sourdough starter yeast", "q3": "shield volcano lava"}
    qrels = {"q1": {"hockey.md": 2}, "q2": {"bread.html": 2}, "q3": {"volcano.txt": 2}}
    golden.write_text(json.dumps(golden_set(queries, qrels, config)))
    recorded = drift_flow(config, str(golden), record=True)
    assert recorded["ndcg@10"] == pytest.approx(1.0)
    assert drift_flow(config, str(golden))["drifted"] is False

    (root / "hockey.md").write_text("# Knitting\n\nA scarf needs two needles and patience.\n")
    (root / "bread.html").unlink()
    ingest_flow(str(root), config)
    with pytest.raises(RelevanceDrift, match=r"below baseline 1\.0000"):
        drift_flow(config, str(golden))
    report = json.loads(sorted((tmp_path / "reports").glob("drift-Drifting-*.json"))[-1].read_text())
    assert report["drifted"] is True and report["per_query_ndcg@10"]["q3"] == pytest.approx(1.0)

"""Evaluation helpers on tiny hand-checked data: metrics, aggregation, the textbook BM25."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from tasks.evaluate import TextbookBM25, load_beir, markdown_table, overlap_at, score_run, to_documents, tokenize


def test_chunk_hits_become_documents_in_best_chunk_order() -> None:
    hits = [("d2", 9.0), ("d1", 8.0), ("d2", 7.0), ("d3", 1.0)]
    docs = to_documents(hits, depth=2)
    assert sorted(docs, key=docs.__getitem__, reverse=True) == ["d2", "d1"]


def test_metrics_match_hand_computed_values() -> None:
    qrels = {"q1": {"a": 2, "b": 1}, "q2": {"c": 1}}
    run = {"q1": {"b": 3.0, "x": 2.0, "a": 1.0}, "q2": {"y": 2.0, "z": 1.0}}  # q2 finds nothing relevant
    got = score_run(qrels, run)
    # trec_eval's nDCG (and so BEIR's) takes the grade itself as gain:
    # q1: DCG = 1/log2(2) + 2/log2(4) = 2; IDCG = 2/log2(2) + 1/log2(3)
    ndcg_q1 = 2 / (2 + 1 / math.log2(3))
    assert got["nDCG@10"] == pytest.approx(ndcg_q1 / 2, abs=1e-4)
    assert got["MRR@10"] == pytest.approx(0.5)  # q1: first relevant at rank 1; q2: none
    assert got["Recall@100"] == pytest.approx(0.5)


def test_a_query_without_hits_counts_as_zero() -> None:
    assert score_run({"q1": {"a": 1}, "q2": {"b": 1}}, {"q1": {"a": 1.0}})["nDCG@10"] == pytest.approx(0.5)


def test_textbook_bm25_ranks_the_matching_chunk_first() -> None:
    bm25 = TextbookBM25(["d1", "d2", "d3"], ["Statins and breast cancer survival", "Vitamin D and bone health",
                                            "Green tea, coffee and the liver"])
    assert bm25.search("breast cancer statins", 3)[0][0] == "d1"
    assert tokenize("Vitamin-D3, 25(OH)D") == ["vitamin", "d3", "25", "oh", "d"]


def test_overlap_and_table() -> None:
    a = {"q": {"x": 3.0, "y": 2.0}}
    assert overlap_at(a, {"q": {"y": 1.0, "z": 0.5}}, k=2) == pytest.approx(0.5)
    table = markdown_table([{"chunker": "recursive", "mode": "bm25", "nDCG@10": 0.31234}])
    assert table.splitlines()[2] == "| recursive | bm25 | 0.3123 |"


def test_load_beir_keeps_judged_queries(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t2\n")
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "one"}\n{"_id": "q9", "text": "unjudged"}\n')
    data = load_beir(tmp_path)
    assert data.queries == {"q1": "one"} and data.qrels == {"q1": {"d1": 2}}

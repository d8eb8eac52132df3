"""Retrieval evaluation, as the IR community measures it: BEIR data, document-level runs, metrics.

Chunk hits are aggregated to documents (a document scores its best chunk), then scored with
ir-measures (trec_eval's implementations) — nDCG@10, MRR@10 (RR@10) and Recall@100. A textbook
BM25 (rank-bm25, Okapi) over the same chunks gives an independent reference for Weaviate's BM25.
Pure functions over in-memory data; reading the files is :func:`load_beir`'s one job.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from tasks.stemming import words as tokenize

METRICS = ("nDCG@10", "RR@10", "R@100")
LABELS = {"nDCG@10": "nDCG@10", "RR@10": "MRR@10", "R@100": "Recall@100"}

Run = dict[str, dict[str, float]]  # query id -> document id -> score
Qrels = dict[str, dict[str, int]]  # query id -> document id -> graded relevance


@dataclass(frozen=True)
class BeirSet:
    queries: dict[str, str]  # the split's judged queries only
    qrels: Qrels


def load_beir(beir_dir: Path, split: str = "test") -> BeirSet:
    """Queries and qrels of one split of a BEIR folder (``queries.jsonl``, ``qrels/<split>.tsv``).

    Raises:
        FileNotFoundError: the folder lacks either file.
    """
    qrels: Qrels = {}
    with (beir_dir / "qrels" / f"{split}.tsv").open() as fh:
        next(fh)  # header
        for line in fh:
            qid, did, rel = line.rstrip("\n").split("\t")
            qrels.setdefault(qid, {})[did] = int(rel)
    queries = {}
    with (beir_dir / "queries.jsonl").open() as fh:
        for line in fh:
            q = json.loads(line)
            if q["_id"] in qrels:
                queries[q["_id"]] = q["text"]
    return BeirSet(queries, {q: r for q, r in qrels.items() if q in queries})


def to_documents(hits: Iterable[tuple[str, float]], depth: int = 100) -> dict[str, float]:
    """Chunk hits (document id, score) in rank order -> the top ``depth`` documents, each scored by
    its best chunk. Scores are made strictly decreasing in rank so ties cannot reorder them."""
    ranked = list(dict.fromkeys(doc for doc, _ in hits))[:depth]
    return {doc: float(len(ranked) - i) for i, doc in enumerate(ranked)}


def score_run(qrels: Qrels, run: Run) -> dict[str, float]:
    """Mean nDCG@10, MRR@10 and Recall@100 over the judged queries (a query with no hits scores 0)."""
    import ir_measures
    from ir_measures import Qrel, ScoredDoc

    measures = [ir_measures.parse_measure(m) for m in METRICS]
    qrel_rows = [Qrel(q, d, rel) for q, docs in qrels.items() for d, rel in docs.items()]
    run_rows = [ScoredDoc(q, d, s) for q, docs in run.items() for d, s in docs.items()]
    per_query = {str(m): {q: 0.0 for q in qrels} for m in measures}
    for metric in ir_measures.iter_calc(measures, qrel_rows, run_rows):
        per_query[str(metric.measure)][metric.query_id] = float(metric.value)
    return {LABELS[m]: sum(v.values()) / max(len(v), 1) for m, v in per_query.items()}


class TextbookBM25:
    """Okapi BM25 (rank-bm25) over chunk texts, with Weaviate's default k1 and b."""

    def __init__(self, chunk_docs: list[str], chunk_texts: list[str], k1: float = 1.2, b: float = 0.75) -> None:
        from rank_bm25 import BM25Okapi

        self.chunk_docs = chunk_docs
        self.index = BM25Okapi([tokenize(t) for t in chunk_texts], k1=k1, b=b)

    def search(self, query: str, depth: int) -> list[tuple[str, float]]:
        """Top ``depth`` chunks as (document id, score), best first."""
        import numpy as np

        scores = self.index.get_scores(tokenize(query))
        top = np.argsort(-scores, kind="stable")[:depth]
        return [(self.chunk_docs[i], float(scores[i])) for i in top if scores[i] > 0]


def overlap_at(a: Mapping[str, Mapping[str, float]], b: Mapping[str, Mapping[str, float]], k: int = 10) -> float:
    """Mean share of the top-k documents two runs agree on (|A ∩ B| / k), over the queries of ``a``."""
    shares = []
    for q, docs in a.items():
        top_a = sorted(docs, key=docs.__getitem__, reverse=True)[:k]
        other = b.get(q, {})
        top_b = sorted(other, key=other.__getitem__, reverse=True)[:k]
        shares.append(len(set(top_a) & set(top_b)) / k)
    return sum(shares) / max(len(shares), 1)


def markdown_table(rows: list[dict[str, object]]) -> str:
    """Rows of (chunker, mode, metrics...) as a Markdown table, in the given order."""
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(cols))) + "|"]
    for row in rows:
        cells = [f"{v:.4f}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)

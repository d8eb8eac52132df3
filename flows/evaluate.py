"""``eval_flow``: ingest a BEIR corpus through the normal pipeline and measure retrieval on its queries.

Each corpus document becomes a source file (``<id>.md``: its title as a heading, then its text),
or the caller names a folder of documents (e.g. the same corpus as PDFs) with a file-name -> id
map. The files go through ``ingest_flow`` like any source — a second evaluation of the same
corpus and config is a no-op refresh — then every judged query runs in each mode and chunk hits
are aggregated to documents. Writes ``eval-<collection>.json`` and ``.md`` and publishes the table.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from prefect import flow

from flows.ingest import ingest_flow
from flows.report import publish
from infra.weaviate.connection import weaviate_client, weaviate_endpoint
from schemas.config import HeadwaterConfig, load_config
from tasks.embed import Embedder
from tasks.evaluate import TextbookBM25, load_beir, markdown_table, overlap_at, score_run, to_documents
from tasks.search import CrossEncoderReranker, SearchMode, search

DEPTH = 100  # documents per query (Recall@100)
CHUNK_DEPTH = 400  # chunks fetched per query to fill DEPTH documents


def materialize(beir_dir: Path, corpus_dir: Path) -> int:
    """Write each ``corpus.jsonl`` document as ``<id>.md`` (unchanged files are left alone)."""
    corpus_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    with (beir_dir / "corpus.jsonl").open() as fh:
        for line in fh:
            doc = json.loads(line)
            path = corpus_dir / f"{doc['_id'].replace('/', '_')}.md"
            body = f"# {doc['title'].strip()}\n\n{doc['text'].strip()}\n" if doc["title"].strip() else \
                f"{doc['text'].strip()}\n"
            if not path.exists() or path.read_text() != body:
                path.write_text(body)
            count += 1
    return count


@flow(name="evaluate", log_prints=True)
def eval_flow(beir_dir: str, config: HeadwaterConfig | None = None, split: str = "test",
              docs: str | None = None, doc_ids: str | None = None, work: str | None = None,
              out: str | None = None, alphas: list[float] | None = None) -> dict[str, Any]:
    """Ingest, query and score; returns the results (also written as JSON and Markdown).

    Args:
        beir_dir: A BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).
        docs: Ingest this folder instead of the materialised ``corpus.jsonl`` (e.g. PDFs).
        doc_ids: JSON file mapping a file name in ``docs`` to its BEIR document id.
        work: Where the materialised corpus goes (default: beside the reports).
        out: Where the JSON and Markdown results go (default ``runs.report_dir``).
        alphas: Hybrid weights to measure (default: ``query.alpha``).
    """
    config = config or load_config()
    beir = Path(beir_dir)
    data = load_beir(beir, split)
    started = time.perf_counter()
    if docs is None:
        corpus_dir = Path(work) if work else config.runs.report_dir.parent / "eval" / beir.name
        materialize(beir, corpus_dir)
    else:
        corpus_dir = Path(docs)
    ingest = ingest_flow(str(corpus_dir), config)
    key = doc_key(json.loads(Path(doc_ids).read_text()) if doc_ids else None)
    rows, parity = _measure(config, data, key, alphas or [config.query.alpha])
    result = {"beir": str(beir), "split": split, "queries": len(data.queries), "source": str(corpus_dir),
              "collection": config.index.collection, "chunker": config.chunk.strategy,
              "chunk_tokens": config.chunk.size_tokens, "model": config.embed_model.model,
              "documents_indexed": ingest.ledger_sources, "chunks": ingest.objects_in_collection,
              "documents_failed": ingest.documents_failed, "rows": rows, "bm25_parity": parity,
              "seconds": time.perf_counter() - started}
    table = markdown_table(rows)
    md = (f"# Headwater eval: {beir.name} ({split}, {len(data.queries)} queries)\n\n"
          f"Index `{config.index.collection}`: chunker `{config.chunk.strategy}` ({config.chunk.size_tokens} "
          f"tokens), model `{config.embed_model.model}`, {ingest.objects_in_collection} chunks of "
          f"{ingest.ledger_sources} documents.\n\n{table}\n\nBM25 parity (text field only): Weaviate "
          f"nDCG@10 {parity['weaviate_ndcg@10']:.4f}, rank-bm25 {parity['rank_bm25_ndcg@10']:.4f}, "
          f"top-10 overlap {parity['overlap@10']:.1%}.\n")
    target = Path(out) if out else config.runs.report_dir
    target.mkdir(parents=True, exist_ok=True)
    (target / f"eval-{config.index.collection}.json").write_text(json.dumps(result, indent=2))
    (target / f"eval-{config.index.collection}.md").write_text(md)
    publish("eval", config.index.collection, result, md, config)
    return result


def run_queries(client: Any, alias: str, queries: dict[str, str], vectors: dict[str, list[float]], key: Any,
                mode: SearchMode, alpha: float, fusion: Any, properties: tuple[str, ...], reranker: Any = None,
                rerank_top: int = 50) -> dict[str, dict[str, float]]:
    """Each query's top documents (chunk hits aggregated by ``key(source_uri)``)."""
    out = {}
    for qid, text in queries.items():
        hits = search(client, alias, text, mode, CHUNK_DEPTH, alpha=alpha, fusion=fusion, properties=properties,
                      vector=vectors[qid], reranker=reranker, rerank_top=rerank_top)
        out[qid] = to_documents(((doc, h.score) for h in hits for doc in key(h.source_uri)), DEPTH)
    return out


def doc_key(ids: dict[str, str | list[str]] | None = None, strip: str = ".md") -> Any:
    """source_uri -> document keys: its file name, mapped through ``ids`` or with ``strip`` removed.

    A file the map gives several ids (a title shared by several documents, so which file is which
    is unknown) counts as each of them.
    """
    def key(source_uri: str) -> list[str]:
        name = Path(unquote(urlparse(source_uri).path)).name
        if ids is None:
            return [name.removesuffix(strip)]
        found = ids.get(name, name)
        return list(found) if isinstance(found, list) else [found]
    return key


def _measure(config: HeadwaterConfig, data: Any, key: Any, alphas: list[float]) -> tuple[list[dict], dict]:
    q = config.query
    embedder = Embedder(config.embed_model, config.embed)
    qids = list(data.queries)
    vectors = dict(zip(qids, embedder.encode([data.queries[i] for i in qids]).tolist(), strict=True))
    reranker = CrossEncoderReranker(q.rerank_model) if q.rerank_model else None
    modes: list[tuple[str, SearchMode, float, Any]] = [("bm25", "bm25", 0.0, None), ("vector", "vector", 1.0, None)]
    modes += [(f"hybrid α={a}", "hybrid", a, None) for a in alphas]
    if reranker is not None:
        modes.append((f"hybrid α={alphas[0]} + rerank", "hybrid", alphas[0], reranker))
    rows = []
    with weaviate_endpoint(config.weaviate) as endpoint, weaviate_client(endpoint) as client:
        alias = config.index.collection

        def run(mode: SearchMode, alpha: float, rr: Any, properties: tuple[str, ...]) -> dict[str, dict[str, float]]:
            return run_queries(client, alias, data.queries, vectors, key, mode, alpha, q.fusion, properties, rr,
                               q.rerank_top)

        for label, mode, alpha, rr in modes:
            started = time.perf_counter()
            scores = score_run(data.qrels, run(mode, alpha, rr, q.properties))
            rows.append({"chunker": config.chunk.strategy, "mode": label, **scores,
                         "seconds": time.perf_counter() - started})
        weaviate_text = run("bm25", 0.0, None, ("text",))
        chunks = [(doc, str(o.properties["text"]))
                  for o in client.collections.use(alias).iterator(return_properties=["source_uri", "text"])
                  for doc in key(str(o.properties["source_uri"]))]
    textbook = TextbookBM25([d for d, _ in chunks], [t for _, t in chunks])
    reference = {qid: to_documents(textbook.search(data.queries[qid], CHUNK_DEPTH), DEPTH) for qid in qids}
    parity = {"weaviate_ndcg@10": score_run(data.qrels, weaviate_text)["nDCG@10"],
              "rank_bm25_ndcg@10": score_run(data.qrels, reference)["nDCG@10"],
              "overlap@10": overlap_at(weaviate_text, reference, 10)}
    return rows, parity

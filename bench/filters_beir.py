#!/usr/bin/env python
"""Filtered retrieval on one BEIR dataset: retrievo's pre-filtering vs bm25s's weight mask
vs post-filtering, at four selectivities, in one process and one run.

    python bench/filters_beir.py DATA_DIR [--json] [--split test] [--repeat 3] [--seed 0]
                                 [--postfilter-depth 100] [--no-dense]

Metadata. Each document gets a seeded synthetic column ``bucket``, uniform in
``[0, 1000)`` (``numpy.random.default_rng(seed)``), and the filters ``bucket < 500``,
``< 100``, ``< 10`` and ``< 1`` keep 50%, 10%, 1% and 0.1% of the corpus (the exact
counts are printed). The column is stored as retrievo metadata (columns of the document
store) and given to bm25s as a 0/1 weight mask.

Systems (all answer the split's queries, k = 10, one thread)
  retrievo_bm25  ``BM25(index, k=10, filter=...)``: the filter's bitmap applied before
                 top-k (postings compacted to the filter when it keeps <= 12.5%).
  retrievo_dense ``Dense(..., filter=...)``, exact inner product over all-MiniLM-L6-v2
                 vectors (the dense stage's cached corpus vectors; query vectors
                 encoded once up front, so qps is search only).
  bm25s_mask     bm25s (method=lucene, k1=0.9, b=0.4, numba backend, its own English
                 tokenizer + stemmer) with ``weight_mask``: scores of excluded documents
                 are multiplied by 0, so when fewer than k documents match, excluded
                 documents come back with score 0 (counted and printed as "leaked").
  postfilter     retrievo BM25 unfiltered to depth ``--postfilter-depth`` (default 100),
                 then the excluded documents dropped and the rest cut to 10 — what users
                 of engines without pre-filtering do.
  unfiltered     retrievo BM25, k = 10, same queries, no filter: the reference speed.

recall@10 is against *exact filtered search of the same scoring function*: the full
unfiltered ranking of that system restricted to the filter's documents (documents
without any query term, score 0, are not results), top 10; per query |got ∩ exact| /
|exact|, averaged over the queries whose exact list is not empty. For retrievo_bm25 and
retrievo_dense the exact list is computed independently of the filtered code path (a
full ranking, then restricted).

qps: all queries in one batch call, best of ``--repeat`` samples, each sample repeating
the batch until it lasts >= 0.5 s (``time.perf_counter``); JIT code is warmed up first.

``--json`` prints one object keyed by the kept fraction (``"0.5"``, ``"0.1"``, ``"0.01"``,
``"0.001"``), each keyed by system with ``qps`` and ``recall@10``, plus
``"unfiltered"`` -> ``retrievo_bm25`` -> ``qps``; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

FRACTIONS = {"0.5": 500, "0.1": 100, "0.01": 10, "0.001": 1}
K = 10


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def qps(run, n_queries: int, repeat: int) -> float:
    """Best of ``repeat`` samples, each repeating ``run()`` until it lasts >= 0.5 s."""
    best = 0.0
    for _ in range(repeat):
        calls, start = 0, time.perf_counter()
        while True:
            run()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= 0.5:
                break
        best = max(best, calls * n_queries / elapsed)
    return best


def recall_at_10(got: list[list[str]], exact: list[list[str]]) -> float:
    values = [len(set(g[:K]) & set(e)) / len(e) for g, e in zip(got, exact) if e]
    return float(np.mean(values)) if values else 1.0


def restrict(full: list[list[str]], keep: set[str]) -> list[list[str]]:
    return [[d for d in ranked if d in keep][:K] for ranked in full]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"
                                                           / "scifact"))
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--split", default="test")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--postfilter-depth", type=int, default=100)
    parser.add_argument("--no-dense", action="store_true", help="skip retrievo_dense (needs torch and the model)")
    args = parser.parse_args()
    if args.repeat < 1 or args.postfilter_depth < K:
        parser.error(f"--repeat must be >= 1 and --postfilter-depth >= {K}")
    log("command:", shlex.join([sys.executable, *sys.argv]))
    log(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores visible, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")

    from retrievo.data.beir import BeirDataset
    from retrievo.index.inverted import InvertedIndex
    from retrievo.retrieve.bm25 import BM25
    from retrievo.types import Document

    data = BeirDataset(args.data_dir)
    plain_docs = list(data.iter_documents())
    queries = data.queries(args.split)
    n_q = len(queries)
    buckets = np.random.default_rng(args.seed).integers(0, 1000, len(plain_docs))
    docs = [Document(d.doc_id, d.text, d.title, {**dict(d.meta), "bucket": int(b)})
            for d, b in zip(plain_docs, buckets)]
    index = InvertedIndex.build(docs, workers=1)
    log(f"{len(docs):,} documents, {n_q} {args.split} queries; retrievo index built")
    filters = {frac: f"bucket < {limit}" for frac, limit in FRACTIONS.items()}
    keeps = {frac: set(index.doc_ids[index.filter_mask(f)].tolist()) for frac, f in filters.items()}
    for frac, keep in keeps.items():
        log(f"  {filters[frac]!r} keeps {len(keep):,} documents ({len(keep) / len(docs):.2%}; nominal {frac})")

    def ids(rankings) -> list[list[str]]:
        return [list(r.doc_ids) for r in rankings]

    out: dict = {frac: {} for frac in FRACTIONS}
    # ---------------------------------------------------------------- retrievo BM25
    BM25(index, k=K, threads=1)(queries)  # JIT warm-up
    full_bm25 = ids(BM25(index, k=index.total_docs, threads=1, pruning="off")(queries))
    unfiltered = BM25(index, k=K, threads=1)
    out["unfiltered"] = {"retrievo_bm25": {"qps": qps(lambda: unfiltered(queries), n_q, args.repeat)}}
    log(f"unfiltered retrievo_bm25: {out['unfiltered']['retrievo_bm25']['qps']:,.0f} q/s")
    for frac, expr in filters.items():
        stage = BM25(index, k=K, threads=1, filter=expr)
        got = ids(stage(queries))
        exact = restrict(full_bm25, keeps[frac])
        out[frac]["retrievo_bm25"] = {"qps": qps(lambda: stage(queries), n_q, args.repeat),
                                      "recall@10": recall_at_10(got, exact)}
        assert all(len(g) == len(e) for g, e in zip(got, exact)), "min(k, matches) results"
    # ---------------------------------------------------------------- post-filtering
    deep = BM25(index, k=args.postfilter_depth, threads=1)
    for frac, expr in filters.items():
        keep = keeps[frac]

        def postfilter(keep=keep):
            return [[d for d in r.doc_ids.tolist() if d in keep][:K] for r in deep(queries)]

        out[frac]["postfilter"] = {"qps": qps(postfilter, n_q, args.repeat),
                                   "recall@10": recall_at_10(postfilter(), restrict(full_bm25, keep))}
    # ---------------------------------------------------------------- bm25s weight mask
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    corpus_tokens = bm25s.tokenize([f"{d.title} {d.text}" for d in plain_docs], stopwords="en", stemmer=stemmer,
                                   show_progress=False)
    retriever = bm25s.BM25(method="lucene", k1=0.9, b=0.4, backend="numba")
    retriever.index(corpus_tokens, show_progress=False)
    q_tokens = bm25s.tokenize(list(queries.texts), stopwords="en", stemmer=stemmer, show_progress=False)
    doc_ids = np.array([d.doc_id for d in plain_docs], dtype=object)
    n_docs = len(plain_docs)

    def bm25s_run(k, mask=None):
        res, scores = retriever.retrieve(q_tokens, k=k, n_threads=1, show_progress=False, weight_mask=mask)
        return res, scores

    bm25s_run(K)  # JIT warm-up
    res, scores = bm25s_run(n_docs)
    full_bm25s = [[doc_ids[i] for i, s in zip(r, sc) if s > 0] for r, sc in zip(res, scores)]
    for frac in FRACTIONS:
        keep = keeps[frac]
        mask = np.array([d in keep for d in doc_ids], dtype=np.float32)
        res, scores = bm25s_run(K, mask)
        got = [[doc_ids[i] for i in r] for r in res]
        leaked = sum(doc_ids[i] not in keep for r in res for i in r)
        out[frac]["bm25s_mask"] = {"qps": qps(lambda mask=mask: bm25s_run(K, mask), n_q, args.repeat),
                                   "recall@10": recall_at_10(got, restrict(full_bm25s, keep))}
        log(f"  bm25s_mask at {frac}: {leaked:,} of {len(got) * K:,} returned results are excluded documents "
            "(score 0)")
    # ---------------------------------------------------------------- retrievo dense (exact)
    if not args.no_dense:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from retrievo.index.vectors import VectorIndex
        from retrievo.retrieve.dense import Dense, vectors_for
        from retrievo.types import Queries

        plain = InvertedIndex.build(plain_docs, workers=1)  # same identity as any SciFact build: cached vectors
        base = Dense(plain, k=K, threads=1, progress=False)
        cached = vectors_for(plain, base.encoder(), progress=False)
        numbers = np.flatnonzero(cached.live) if cached.live is not None else np.arange(cached.total_docs)
        by_id = dict(zip(cached.doc_ids[numbers].tolist(), numbers.tolist()))
        vectors = cached.vectors_of(np.array([by_id[d.doc_id] for d in docs]))
        model = base.encoder().identity()
        vindex = VectorIndex.build([d.doc_id for d in docs], vectors, model=model, model_spec=cached.model_spec,
                                   documents=docs)
        qv = base.query_vectors(queries)
        carried = Queries(queries.ids, queries.texts, [{"vector": v, "vector_model": model} for v in qv])
        full_dense = ids(Dense(vindex, k=len(docs), threads=1, progress=False)(carried))
        for frac, expr in filters.items():
            stage = Dense(vindex, k=K, threads=1, progress=False, filter=expr)
            got = ids(stage(carried))
            out[frac]["retrievo_dense"] = {"qps": qps(lambda stage=stage: stage(carried), n_q, args.repeat),
                                           "recall@10": recall_at_10(got, restrict(full_dense, keeps[frac]))}
    # ---------------------------------------------------------------- report
    log(f"\n{'kept':>7} {'system':<15} {'q/s':>10} {'recall@10':>10}")
    for frac in FRACTIONS:
        for system, row in out[frac].items():
            log(f"{frac:>7} {system:<15} {row['qps']:>10,.0f} {row['recall@10']:>10.4f}")
    log(f"{'all':>7} {'retrievo_bm25':<15} {out['unfiltered']['retrievo_bm25']['qps']:>10,.0f}")
    if args.json:
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

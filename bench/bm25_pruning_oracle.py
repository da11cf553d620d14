#!/usr/bin/env python
"""How much could exact dynamic pruning skip on the scale benchmark's corpus? An oracle, not a method.

    python bench/bm25_pruning_oracle.py [--docs 1000000] [--generator unigram|topical] [--workdir DIR]
                                        [--index DIR] [--step 15] [--block-docs 32,128] [--k 10] [--json]

Issue 12 asks for pruned top-10 at >= 4x retrievo's own exhaustive top-10 on the corpus of
``bench/bm25_scale.py``. Before writing yet another pruning kernel it pays to know what the
best exact method of a family could save there. For every ``--step``-th of the benchmark's
900 queries this script computes the final top-``k`` threshold ``theta`` exhaustively (so
it is known in advance, which no real method can do), then counts what an exact
term-at-a-time method with candidate completion would read, with the number ``s`` of
terms it reads in full chosen per query in hindsight (again better than any real method):

``global``     the ``s`` terms of largest maximum contribution are read in full; valid only
               once the unread terms' maxima add up to less than ``theta``. A document read so
               far is a candidate when its partial score plus those maxima reaches ``theta``;
               a candidate costs 8 postings per unread term (one lookup by binary search).
``block B``    the same with block-max bounds, blocks of ``B`` consecutive documents: where
               the unread terms' block maxima add up to ``theta`` or more, a document that no
               read term holds could still qualify, so the unread postings of that block are
               read in full; elsewhere a document read so far is a candidate when its partial
               score plus the block maxima reaches ``theta``, and costs 8 postings per unread
               term that has a posting in its block. ``+maxima`` also counts reading every
               non-empty block maximum of the unread terms (one posting each): what it costs
               to know where those blocks are, an upper bound of it, since a document-at-a-time
               method reads only the maxima of the blocks its cursors visit.

Printed per method: the fraction of each query's postings read, its median over the
queries and its posting-weighted mean. ``1 / fraction`` is the speed-up such a method would
have over reading everything *if it cost as much per posting read as the exhaustive kernel*;
it costs more (lookups, cursors, random access instead of a sequential add into a
cache-resident accumulator), so the real speed-up is below it. Results: BENCHMARKS.md,
"BM25 at scale".

The index is opened from ``--index`` or built under ``--workdir`` (one worker, no stored
text) from the corpus ``bench/bm25_scale.py`` generates with the same ``--seed`` and
``--generator``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bm25_scale  # noqa: E402  (this folder: the corpus generator and the queries)

LOOKUP = 8  # postings one candidate lookup is counted as (a binary search in one list)


def open_or_build(args):
    from retrievo.index import InvertedIndex

    if args.index:
        return InvertedIndex.open(args.index)
    work = Path(args.workdir)
    path = work / f"idx-{args.generator}-seed{args.seed}-{args.docs}"
    if not path.exists():
        corpus = bm25_scale.corpus_file(work, args.docs, args.seed, Path(args.data), args.generator)
        bm25_scale.log(f"indexing {corpus} -> {path}")
        InvertedIndex.build(bm25_scale.iter_docs(corpus, args.docs), path, workers=1, store=False)
    return InvertedIndex.open(path)


def query_lists(bm, st, queries):
    """Per query: a list of (documents, contributions as float64) per query term."""
    q_ptr, q_terms, q_weights = bm._query_terms(queries, st["vocab"])
    indptr, docs, imps = st["indptr"][0], st["docs"], st["imps"]
    for qi in range(len(queries)):
        lists = []
        for t, w in zip(q_terms[q_ptr[qi]:q_ptr[qi + 1]], q_weights[q_ptr[qi]:q_ptr[qi + 1]]):
            lo, hi = indptr[t], indptr[t + 1]
            if hi > lo:  # products rounded to float32 as the kernel does, summed in float64
                lists.append((np.asarray(docs[lo:hi]), (np.float32(w) * imps[lo:hi]).astype(np.float64)))
        yield lists


def oracle(lists, n_docs: int, k: int, blocks: list[int]) -> dict[str, float]:
    """Fractions of the query's postings each method reads at its best ``s``."""
    total = sum(len(d) for d, _ in lists)
    full = np.zeros(n_docs)
    for d, c in lists:
        full[d] += c
    theta = np.partition(full, n_docs - k)[n_docs - k]
    order = sorted(range(len(lists)), key=lambda i: -lists[i][1].max())
    maxima = [lists[i][1].max() for i in order]
    block_max = {}
    for b in blocks:
        nb = (n_docs + b - 1) // b
        per = []
        for i in order:
            m = np.zeros(nb)
            np.maximum.at(m, lists[i][0] // b, lists[i][1])
            per.append(m)
        block_max[b] = per
    best = {"global": total, **{f"block {b}": total for b in blocks}, **{f"block {b} +maxima": total for b in blocks}}
    acc = np.zeros(n_docs)
    read = 0
    for s in range(1, len(order) + 1):
        d, c = lists[order[s - 1]]
        acc[d] += c
        read += len(d)
        rest = range(s, len(order))
        if not rest:
            for key in best:
                best[key] = min(best[key], read)
            break
        touched = np.flatnonzero(acc > 0)
        ub = sum(maxima[s:])
        if ub < theta:
            cand = int(np.count_nonzero(acc[touched] + ub >= theta))
            best["global"] = min(best["global"], read + LOOKUP * cand * len(rest))
        for b in blocks:
            per = block_max[b]
            ub_b = np.sum([per[i] for i in rest], axis=0)
            open_blocks = ub_b >= theta
            in_open = sum(int(np.count_nonzero(open_blocks[lists[order[i]][0] // b])) for i in rest)
            shut = touched[~open_blocks[touched // b]]
            cand = shut[acc[shut] + ub_b[shut // b] >= theta]
            looks = sum(int(np.count_nonzero(per[i][cand // b] > 0)) for i in rest)
            cost = read + in_open + LOOKUP * looks
            best[f"block {b}"] = min(best[f"block {b}"], cost)
            best[f"block {b} +maxima"] = min(best[f"block {b} +maxima"],
                                             cost + sum(int(np.count_nonzero(per[i])) for i in rest))
    return {key: v / total for key, v in best.items()} | {"_postings": total}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--generator", choices=bm25_scale.GENERATORS, default="unigram")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--workdir", default=".", help="where the corpus and the index go when --index is not given")
    p.add_argument("--index", help="an index of the corpus, already built")
    p.add_argument("--data", default=str(bm25_scale.SHARED), help="the shared data folder (corpus words, queries)")
    p.add_argument("--step", type=int, default=15, help="every step-th query of the 900 (default 15: 60 queries)")
    p.add_argument("--block-docs", default="32,128", help="block sizes in documents, comma-separated")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)
    try:
        blocks = [int(b) for b in args.block_docs.split(",") if b.strip()]
    except ValueError:
        p.error(f"--block-docs takes whole numbers separated by commas, got {args.block_docs!r}")
    if not blocks or min(blocks) < 1:
        p.error(f"--block-docs: every block size must be >= 1, got {args.block_docs!r}")
    for name in ("docs", "step", "k"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")

    from retrievo.retrieve import BM25
    from retrievo.types import Queries

    index = open_or_build(args)
    bm = BM25(index, k=args.k, threads=1)
    st = bm._arrays()
    if args.k > st["n_docs"]:
        p.error(f"--k {args.k} exceeds the index's {st['n_docs']} documents")
    ids, texts = bm25_scale.load_queries(Path(args.data))
    chosen = list(range(0, len(texts), args.step))
    queries = Queries([ids[i] for i in chosen], [texts[i] for i in chosen])
    rows = []
    for qi, lists in enumerate(query_lists(bm, st, queries)):
        rows.append(oracle(lists, st["n_docs"], args.k, blocks))
        bm25_scale.log(f"{qi + 1}/{len(chosen)} {queries.ids[qi]}: "
                       + ", ".join(f"{key} {v:.3f}" for key, v in rows[-1].items() if key != "_postings"))
    weights = np.array([r["_postings"] for r in rows], dtype=np.float64)
    out = {"docs": st["n_docs"], "generator": args.generator, "queries": len(rows), "k": args.k, "methods": {}}
    for key in rows[0]:
        if key != "_postings":
            f = np.array([r[key] for r in rows])
            out["methods"][key] = {"median": round(float(np.median(f)), 3),
                                   "weighted": round(float((f * weights).sum() / weights.sum()), 3)}
    if args.json:
        print(json.dumps(out, indent=1))
        return
    print(f"{out['docs']:,} documents ({args.generator}), {len(rows)} queries, top-{args.k}: "
          "fraction of each query's postings read, threshold known in advance, best split in hindsight")
    print("| method | median | weighted by postings | speed-up ceiling (1 / weighted) |\n|---|---:|---:|---:|")
    for key, m in out["methods"].items():
        print(f"| {key} | {m['median']:.3f} | {m['weighted']:.3f} | {1 / m['weighted']:.1f}x |")


if __name__ == "__main__":
    main()

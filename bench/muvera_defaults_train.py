#!/usr/bin/env python
"""MUVERA's default parameters, chosen on SciFact *train* queries (never test).

    PYTHONPATH=src HF_HUB_OFFLINE=1 python bench/muvera_defaults_train.py [SCIFACT_DIR]
        [--work DIR] [--queries 200] [--configs 4/16/20,5/8/20,...] [--depths 100,200,300,500,1000]

The whole SciFact corpus is encoded once (all-MiniLM-L6-v2 token embeddings, as in
``bench/sparse_late_beir.py``, whose ``--work`` cache this reuses); the first ``--queries``
train queries in file order are the query set. For each FDE configuration
``k_sim/d_proj/reps`` the script reports the *candidate recall@100* at several candidate
depths: the share of exhaustive MaxSim's top 100 found among the FDE's top ``depth``
documents — after exact re-scoring this is exactly the share of the exhaustive top 100 that
MUVERA returns. It also reports the FDE size, its build time, and the CPU seconds per
query of candidate generation and of re-scoring at each depth (one thread), beside
exhaustive MaxSim's. One JSON line per configuration, then a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_CONFIGS = ("4/16/20,5/8/20,6/4/20,3/32/20,5/16/20,6/8/20,4/32/20,4/16/40,5/8/40,6/8/10,5/16/10")


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def cpu_timed(fn):
    t = time.process_time()
    out = fn()
    return time.process_time() - t, out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/scifact"))
    root = os.environ.get("RETRIEVO_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "retrievo")
    p.add_argument("--work", default=os.path.join(root, "bench-sparse-late"))
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="k_sim/d_proj/reps, comma-separated")
    p.add_argument("--depths", default="100,200,300,500,750,1000")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from retrievo.data.beir import BeirDataset
    from retrievo.index import InvertedIndex, lifecycle
    from retrievo.retrieve.exact import blas_threads
    from retrievo.retrieve.maxsim import MaxSim, rescore, search_maxsim
    from retrievo.retrieve.muvera import Muvera

    print("command: PYTHONPATH=src HF_HUB_OFFLINE=1 python bench/muvera_defaults_train.py "
          + " ".join(argv if argv is not None else sys.argv[1:]), file=sys.stderr)
    data = BeirDataset(args.data_dir)
    queries = data.queries("train")
    queries = queries.subset(queries.ids[:args.queries])
    depths = sorted(int(d) for d in args.depths.split(","))
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    lex_path = work / f"{Path(args.data_dir).name}.idx"
    if not lifecycle.is_index(lex_path):
        InvertedIndex.build(data.iter_documents(), lex_path)
    lex = InvertedIndex.open(lex_path)
    ms = MaxSim(lex, k=100, threads=1)
    mindex = ms.multivectors()
    qv = ms.query_tokens(queries)
    n_q = len(queries)
    with blas_threads(1):
        ex_cpu, (docs, _, counts) = cpu_timed(lambda: search_maxsim(qv, mindex, 100, 1))
    truth = [set(docs[i, :counts[i]].tolist()) for i in range(n_q)]
    summary = {"queries": n_q, "split": "train", "docs": mindex.total_docs,
               "exhaustive_cpu_s_per_query": round(ex_cpu / n_q, 4), "configs": {}}
    log(f"exhaustive MaxSim: {ex_cpu / n_q:.3f} CPU s/query over {mindex.total_docs} documents")
    for cfg in args.configs.split(","):
        k_sim, d_proj, reps = (int(x) for x in cfg.split("/"))
        t = time.perf_counter()
        mu = Muvera(lex, k=100, threads=1, k_sim=k_sim, d_proj=d_proj, reps=reps, candidates=max(depths))
        build_s = time.perf_counter() - t
        with blas_threads(1):
            gen_cpu, numbers = cpu_timed(lambda: mu.candidate_numbers(qv, 1))
        row = {"k_sim": k_sim, "d_proj": d_proj, "reps": reps, "fde_dim": mu.fde().out_dim,
               "fde_build_s_if_built_now": round(build_s, 1),
               "candidates_cpu_s_per_query": round(gen_cpu / n_q, 4), "recall@100": {}, "rescore_cpu_s_per_query": {}}
        for depth in depths:
            row["recall@100"][depth] = round(float(np.mean(
                [len(truth[i] & set(numbers[i][:depth].tolist())) / max(len(truth[i]), 1) for i in range(n_q)])), 4)
        for depth in (d for d in depths if d in (300, 500, 1000)):
            with blas_threads(1):
                cpu, _ = cpu_timed(lambda: rescore(qv, mindex, [n[:depth] for n in numbers]))
            row["rescore_cpu_s_per_query"][depth] = round(cpu / n_q, 4)
        summary["configs"][cfg] = row
        print(json.dumps(row), flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Choose the defaults of the ``hybrid`` stage on a BEIR dataset's *train* split.

    python bench/hybrid_sweep.py DATA_DIR [--split train] [--report test] [--json]

Runs BM25 (Lucene defaults) and exact dense (the ``dense`` stage's default encoder, vectors
from its cache) once per split, then fuses them with every candidate setting: RRF with
k in {1, 5, 10, 20, 30, 60, 100} and min-max normalised interpolation with BM25 weight
0.1 … 0.9 (dense gets the rest), each at fusion depth 100 and 1000. The best setting by
nDCG@10 on ``--split`` (self-hits removed, BEIR convention) is printed; ``--report`` adds
the same table on another split *after* the choice, for reporting only.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

import numpy as np


def sweep(lex, data, split: str) -> dict[str, float]:
    from retrievo.evaluate.metrics import evaluate
    from retrievo.pipeline import fuse_rankings, parse

    queries, qrels = data.queries(split), data.qrels(split)
    bm25, dense = parse("bm25", {"index": lex})(queries), parse("dense", {"index": lex})(queries)

    def ndcg(run) -> float:
        return round(evaluate(run.drop_self_hits(), qrels, ["nDCG@10"])["nDCG@10"], 4)

    out = {"bm25": ndcg(bm25), "dense": ndcg(dense)}
    for depth in (100, 1000):
        b, d = bm25.cut(depth), dense.cut(depth)
        for k in (1, 5, 10, 20, 30, 60, 100):
            out[f"rrf depth={depth} k={k}"] = ndcg(fuse_rankings([b, d], "rrf", k=k))
        for w in np.round(np.arange(0.1, 0.95, 0.1), 1):
            out[f"sum depth={depth} weights={w:g}/{1 - w:g}"] = ndcg(
                fuse_rankings([b, d], "sum", weights=[w, 1 - w], normalize="minmax"))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir")
    p.add_argument("--split", default="train", help="split the defaults are chosen on (default train)")
    p.add_argument("--report", default=None, help="another split to report after choosing (e.g. test)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from retrievo.data.beir import BeirDataset
    from retrievo.index import InvertedIndex

    command = " ".join(shlex.quote(a) for a in ["python", "bench/hybrid_sweep.py", *sys.argv[1:]])
    data = BeirDataset(args.data_dir)
    lex = InvertedIndex.build(data.iter_documents())
    chosen = sweep(lex, data, args.split)
    fused = {k: v for k, v in chosen.items() if k not in ("bm25", "dense")}
    best = max(fused, key=fused.__getitem__)
    best_rrf = max((k for k in fused if k.startswith("rrf")), key=fused.__getitem__)
    result = {"command": command, "split": args.split, args.split: chosen, "best": best, "best_rrf": best_rrf}
    if args.report:
        result[args.report] = sweep(lex, data, args.report)
    if args.json:
        print(json.dumps(result, indent=1))
        return
    other = result.get(args.report, {})
    print(f"setting | {args.split}" + (f" | {args.report}" if other else ""))
    for key, value in chosen.items():
        print(f"{key} | {value:.4f}" + (f" | {other[key]:.4f}" if other else ""))
    print(f"best on {args.split}: {best} ({chosen[best]:.4f}); best RRF: {best_rrf} ({chosen[best_rrf]:.4f})")
    print(f"command: {command}")


if __name__ == "__main__":
    main()

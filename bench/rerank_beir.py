#!/usr/bin/env python
"""Every reranker on one BEIR dataset, in one run: BM25's top 20 of a fixed subset of the
test queries, reranked by the cross-encoder and each LLM method with the same model.

    python bench/rerank_beir.py DATA_DIR [--json] [--queries N] [--model smollm2]
                                [--depth 20] [--only first,icr] [--cross-encoder MODEL]

Query subset (fixed, documented): the split's queries in the order of ``queries.jsonl``
that have judgments, the first ``--queries`` of them (default 5; SciFact test: ids 1, 3,
5, 13, 36, then 42, 48, 49, 50, 51, ...). The default is what keeps the whole run under 30
minutes on 2 CPU cores with SmolLM2-135M (``--model smollm2``, the bundled default): every
method together costs ~310 s per query on one core (BENCHMARKS.md, 10-query run: PRP alone
~185 s), so 5 queries take ~26 minutes even on one. ``--model qwen2.5-coder-0.5b``
(opt-in, sha256-checked) costs ~850 s per query on one core (PRP ~600 s): ``--queries 2``
stays under 30 minutes. More queries give steadier nDCG@10 at a proportional cost.

Measured, per method (``--json`` prints one object keyed ``bm25``, ``cross_encoder``,
``pointwise``, ``prp``, ``rankgpt``, ``first``, ``icr``, ``full``):
  ndcg@10                   over the subset, self-hits removed (BEIR)
  llm_calls_per_query       model calls the method's cost record counts
  forward_passes_per_query  model forward passes (a prefill is one, each generated token one more)
  prompt_tokens_per_query   tokens the model read
  seconds_per_query         wall time of the reranking stage (the first stage excluded)

The cross-encoder: no trained cross-encoder ships offline, so unless ``--cross-encoder``
names one that loads (users: ``cross-encoder/ms-marco-MiniLM-L6-v2``), it is the bundled
all-MiniLM-L6-v2 encoder with a randomly initialised (seed 0) classification head — a
plumbing and speed check whose quality means nothing; the output says which it was.
Prompts are the bundled templates, chosen without looking at test queries. The response
cache is off, so every call is paid for.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone

METHODS = ("pointwise", "prp", "rankgpt", "first", "icr", "full")


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def cross_encoder_model(name: str | None, scratch: str) -> tuple[str, str]:
    if name:
        return name, name
    from retrievo.rerank.cross_encoder import untrained_cross_encoder

    return str(untrained_cross_encoder(os.path.join(scratch, "minilm-random-head"))), \
        "all-MiniLM-L6-v2 + random head (seed 0): plumbing check, quality meaningless"


def run(args) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("RETRIEVO_LLM_CACHE", None)  # pay for every call
    from retrievo.data.beir import BeirDataset
    from retrievo.evaluate.metrics import evaluate
    from retrievo.index import InvertedIndex
    from retrievo.pipeline import parse
    from retrievo.types import Cost

    data = BeirDataset(args.data_dir)
    queries, qrels = data.queries(args.split), data.qrels(args.split)
    have = set(qrels.query_ids)
    judged = [q for q in queries.ids if q in have]
    subset = queries.subset(judged[: args.queries])
    qrels = qrels.subset(subset.ids)  # averages over the subset, not over every judged query
    log(f"{len(subset)} queries: {', '.join(subset.ids[:8])}{' ...' if len(subset) > 8 else ''}")
    with tempfile.TemporaryDirectory() as scratch:
        index = InvertedIndex.build(data.iter_documents(), os.path.join(scratch, "bm25.idx"))
        first = parse(f"bm25 % {args.depth}", {"index": index})(subset)

        def score(rankings) -> float:
            return round(evaluate(rankings.drop_self_hits(), qrels, ["nDCG@10"])["nDCG@10"], 4)

        results: dict[str, dict] = {"bm25": {"ndcg@10": score(first), "llm_calls_per_query": 0,
                                             "forward_passes_per_query": 0, "prompt_tokens_per_query": 0,
                                             "seconds_per_query": round(first.costs[-1].seconds / len(subset), 4)}}
        specs: dict[str, str] = {}
        wanted = args.only.split(",") if args.only else ["cross_encoder", *METHODS]
        if "cross_encoder" in wanted:
            model, note = cross_encoder_model(args.cross_encoder, scratch)
            specs["cross_encoder"] = f"cross_encoder(model={model!r})"
            results["cross_encoder"] = {"model": note}
        for name in METHODS:
            if name in wanted:
                specs[name] = f"{name}(model={args.model!r})"
        for name, spec in specs.items():
            stage = parse(spec, {"index": index})
            if hasattr(stage, "llm"):
                stage.llm  # load (and dequantise) the model before the clock starts
            log(f"{name}: {stage} ...")
            start = time.perf_counter()
            out = stage(first)
            seconds = time.perf_counter() - start
            mine = [c for c in out.costs[len(first.costs):]]
            total = sum(mine[1:], mine[0]) if mine else Cost(name, 0.0)
            n = len(subset)
            row = results.setdefault(name, {})
            row.update({"ndcg@10": score(out), "llm_calls_per_query": round(total.calls / n, 2),
                        "forward_passes_per_query": round(total.forward_passes / n, 2),
                        "prompt_tokens_per_query": round(total.prompt_tokens / n, 1),
                        "seconds_per_query": round(seconds / n, 3)})
            extra = {k: v for k, v in dict(total.extra).items() if v}
            if extra:
                row["extra"] = extra
            log(f"  {json.dumps(row)}")
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", nargs="?", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared",
                                                                "data", "scifact"))
    ap.add_argument("--json", action="store_true", help="print one JSON object keyed by method")
    ap.add_argument("--queries", type=int, default=5, help="first N judged test queries (default 5: under 30 "
                    "minutes with SmolLM2 on 2 cores; Qwen 0.5B: 2)")
    ap.add_argument("--model", default="smollm2", help="LLM for every LLM method (default smollm2)")
    ap.add_argument("--depth", type=int, default=20, help="BM25 candidates reranked per query (default 20)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--only", default="", help="comma-separated methods to run (default: all)")
    ap.add_argument("--cross-encoder", default="", help="cross-encoder name or path (default: random-head MiniLM)")
    args = ap.parse_args()
    command = "python bench/rerank_beir.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    log(f"# {command}\n# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    results = run(args)
    if args.json:
        print(json.dumps(results))
        return
    print(f"{'method':<14} {'nDCG@10':>8} {'calls/q':>8} {'passes/q':>9} {'prompt tok/q':>13} {'s/q':>8}")
    for name, row in results.items():
        print(f"{name:<14} {row.get('ndcg@10', float('nan')):>8.4f} {row.get('llm_calls_per_query', 0):>8} "
              f"{row.get('forward_passes_per_query', 0):>9} {row.get('prompt_tokens_per_query', 0):>13} "
              f"{row.get('seconds_per_query', 0):>8}")
    print(f"\n{command}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Every RAG method on HotpotQA (distractor paragraphs as the corpus), in one run per model.

    python bench/rag_hotpotqa.py [DATA_DIR] [--json] [--model smollm2] [--limit N]
                                 [--only closed_book,read_bm25] [--evidence-only]

DATA_DIR defaults to ../shared/data/hotpotqa (qa.jsonl + BEIR corpus of 5,913 paragraphs).

Part 1, LLM-free, on ALL questions: evidence Recall@5 / Recall@10 (share of the two gold
supporting paragraphs in the top k) of BM25, dense (all-MiniLM-L6-v2, exact) and hybrid
(min-max interpolation 0.5/0.5 of both top-1000).

Part 2, per method, on a FIXED subset: the first ``--limit`` questions of qa.jsonl in file
order (default 10 — chosen for the CPU time, never by results). 600 questions x 12
methods x 2 models does not fit a session on 2 shared CPU cores: SmolLM2-135M costs about
6.5 ms per prompt token on one core, Qwen2.5-Coder-0.5B about four times that. Contexts
are kept short for the same reason: at most 3 passages of 96 tokens are read, answers are
cut at 16 generated tokens (HotpotQA answers are a few words), rewrites at 48. Methods
(pipeline specs are printed in the output):
  closed_book, read_bm25 / read_dense / read_hybrid (top 10 retrieved, 3 read),
  iter_retgen (2 rounds), self_ask (2 hops), alr2, rear (pointwise scores of the top 5,
  threshold 0), utility (3 orders of the top 5) >> read, hyde / query2doc / think >> bm25 >> read.
Measured: EM, F1, accuracy, evidence R@5/R@10 over the list each reader received,
citation precision, seconds and LLM calls per question. Prompts are the bundled
templates, written without looking at these questions; the response cache is off.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "hotpotqa"

READ = "read(k=3, max_passage_tokens=96, max_tokens=16{m})"
METHODS = {
    "closed_book": "closed_book(max_tokens=16{m})",
    "read_bm25": "bm25 % 10 >> " + READ,
    "read_dense": "dense % 10 >> " + READ,
    "read_hybrid": "hybrid % 10 >> " + READ,
    "iter_retgen": "iter_retgen(bm25 % 10, rounds=2, k=3, max_passage_tokens=96, max_tokens=16{m})",
    "self_ask": "self_ask(bm25 % 10, max_hops=2, k=3, max_passage_tokens=96, max_tokens=16{m})",
    "alr2": "bm25 % 10 >> alr2(k=3, max_passage_tokens=96, max_tokens=16{m})",
    "rear": "bm25 % 5 >> rear(scorer=pointwise(max_passage_tokens=96{m}), k=3, max_passage_tokens=96, max_tokens=16{m})",
    "utility": "bm25 % 5 >> utility(samples=3, window=5, max_passage_tokens=96{m}) >> " + READ,
    "hyde": "hyde(max_tokens=48{m}) >> bm25 % 10 >> " + READ,
    "query2doc": "query2doc(max_tokens=48{m}) >> bm25 % 10 >> " + READ,
    "think": "think(max_tokens=48{m}) >> bm25 % 10 >> " + READ,
}


def spec_for(name: str, model: str) -> str:
    m = "" if model == "smollm2" else f", model={model}"
    return METHODS[name].format(m=m)


def evidence_recall(qa, idx) -> dict:
    from retrievo import workflows
    from retrievo.evaluate.qa import evidence_at_k

    out = {}
    for name, spec in (("bm25", "bm25 % 10"), ("dense", "dense % 10"), ("hybrid", "hybrid % 10")):
        start = time.perf_counter()
        rankings = workflows.build_pipeline(spec, idx)(qa.queries)
        vals = {5: [], 10: []}
        for i, qid in enumerate(qa.queries.ids):
            lo, hi = int(rankings.offsets[i]), int(rankings.offsets[i + 1])
            ranked = rankings.doc_ids[lo:hi].tolist()
            for k in vals:
                vals[k].append(evidence_at_k(ranked, qa.evidence[qid], k)[1])
        out[name] = {"R@5": sum(vals[5]) / len(vals[5]), "R@10": sum(vals[10]) / len(vals[10]),
                     "seconds": time.perf_counter() - start}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_dir", nargs="?", default=str(DEFAULT_DATA))
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--limit", type=int, default=10, help="first N questions (file order) for the LLM methods")
    ap.add_argument("--only", default="", help="comma-separated method names")
    ap.add_argument("--evidence-only", action="store_true", help="part 1 only (no LLM)")
    ap.add_argument("--no-evidence", action="store_true", help="part 2 only")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from retrievo import qa_workflows, workflows
    from retrievo.data.qa import load_qa

    command = "python bench/rag_hotpotqa.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    qa = load_qa(args.data_dir)
    idx = workflows.load_index(args.data_dir)
    result = {"command": command, "model": args.model, "questions_total": len(qa),
              "subset": f"first {args.limit} questions of qa.jsonl in file order",
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else print
    log(command)
    if not args.no_evidence:
        result["evidence_all_questions"] = evidence_recall(qa, idx)
        for name, v in result["evidence_all_questions"].items():
            log(f"evidence {name:<7} R@5 {v['R@5']:.4f}  R@10 {v['R@10']:.4f}  ({len(qa)} questions)")
    if not args.evidence_only:
        sub = qa.head(args.limit)
        names = [n for n in METHODS if not args.only or n in args.only.split(",")]
        result["methods"] = {}
        for name in names:
            spec = spec_for(name, args.model)
            log(f"{name}: {spec}")
            run = qa_workflows.evaluate_rag(args.data_dir, spec, qa=sub, index=idx)
            result["methods"][name] = {"pipeline": spec, **run.summary}
            s = run.summary
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            log(f"  EM {fmt(s['EM'])}  F1 {fmt(s['F1'])}  acc {fmt(s['accuracy'])}  R@5 {fmt(s['evidence_R@5'])}  "
                f"R@10 {fmt(s['evidence_R@10'])}  cite-P {fmt(s['citation_precision'])}  "
                f"{s['seconds_per_question']:.1f} s/q  {s['llm_calls']:.1f} calls/q")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""SPLADE's default ``max_length``, chosen on SciFact *train* queries (never test).

    PYTHONPATH=src HF_HUB_OFFLINE=1 python bench/splade_max_length_train.py [SCIFACT_DIR] [--out DIR]

A 1,000-document subset keeps it affordable on 2 cores: the judged documents of the first
200 train queries plus seeded random others (``random.Random(0)``), written as a BEIR folder
under ``--out``; each spec is evaluated with ``retrievo``'s ``evaluate_pipeline`` on the
train split (self-hits dropped). Prints one JSON line per spec with nDCG@10, R@100 and the
wall / CPU seconds of the evaluation (encoding included).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import time
from pathlib import Path

SPECS = ("bm25", "splade(max_length=128)", "splade(max_length=256)", "splade(max_length=512)")


def subset(src: Path, out: Path, n_queries: int = 200, n_docs: int = 1000) -> None:
    qrels = [line.split("\t") for line in (src / "qrels" / "train.tsv").read_text().splitlines()[1:]]
    qids = list(dict.fromkeys(q for q, _, _ in qrels))[:n_queries]
    wanted = {d for q, d, _ in qrels if q in qids}
    with gzip.open(src / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        docs = [json.loads(line) for line in fh]
    others = [d for d in docs if d["_id"] not in wanted]
    keep = [d for d in docs if d["_id"] in wanted] + random.Random(0).sample(others, n_docs - len(wanted))
    (out / "qrels").mkdir(parents=True)
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in keep)
    with open(out / "queries.jsonl", "w", encoding="utf-8") as fh:
        for line in (src / "queries.jsonl").read_text(encoding="utf-8").splitlines():
            if json.loads(line)["_id"] in qids:
                fh.write(line + "\n")
    (out / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s.strip()}\n" for q, d, s in qrels if q in qids))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scifact", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared/data/scifact"))
    p.add_argument("--out", default="/tmp/scifact-train-subset")
    p.add_argument("--specs", nargs="*", default=list(SPECS))
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    if not (out / "corpus.jsonl").is_file():
        subset(Path(args.scifact), out)
    from retrievo.workflows import evaluate_pipeline

    for spec in args.specs:
        wall, cpu = time.perf_counter(), time.process_time()
        report = evaluate_pipeline(out, spec, split="train", metrics=["nDCG@10", "R@100"])
        print(json.dumps({"spec": spec, "nDCG@10": round(report.metrics["nDCG@10"], 4),
                          "R@100": round(report.metrics["R@100"], 4), "wall_s": round(time.perf_counter() - wall, 1),
                          "cpu_s": round(time.process_time() - cpu, 1)}), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Train each kind of model on SciFact's train split within a time budget, and report
SciFact test nDCG@10 against the untrained baselines.

    python bench/train_scifact.py [DATA_DIR] [--json] [--minutes M] [--seeds 1,2,3]
                                  [--only cross_encoder,dense,lora] [--models DIR] [--reuse]

DATA_DIR defaults to ../shared/data/scifact. Rows (``--json`` keys, each with ``ndcg@10``
and ``train_minutes``; with several seeds ``ndcg@10`` is the mean and
``ndcg@10_per_seed`` / ``ndcg@10_std`` give the spread):

``bm25``                 BM25 (Lucene defaults) top 100, self-hits removed.
``cross_encoder``        BM25 top d >> the cross-encoder ``retrievo train cross-encoder``
                         makes from all-MiniLM-L6-v2 (ListNet, negatives top20:3,top100:2,
                         random:2, one epoch), pure reranking, ``max_length=256`` as trained;
                         the depth d (``--pure-depths``, default 10, 20, 30, 50, 100) is the
                         best on the dev split carved from *train* (ties to the deeper), per
                         seed (``depths``); ``ndcg@10_depth100`` is the fixed depth 100 when a
                         run scores it.
``cross_encoder_fused``  the same candidates, scored ``w * z(cross-encoder) + (1 - w) *
                         z(BM25)`` with per-query z-scores; ``w`` (grid 0, 0.05, ..., 1) is
                         the best on the dev split the trainer carved from *train*, never on test.
``dense_base``           all-MiniLM-L6-v2, exact search (``dense``) over the whole corpus, texts
                         cut to ``--dense-max-length`` tokens (default 256, the model's own).
``dense_trained``        the same after ``retrievo train bi-encoder`` at that length
                         (multiple-negatives ranking loss, in-batch + one BM25 negative from
                         the top 30, one epoch).
``zero_shot_pointwise``  BM25 top ``--lora-depth`` (default 10) >> pointwise(model=smollm2),
                         passages truncated to 96 tokens, fp32, on the first ``--lora-queries``
                         test queries (default 30: one LLM pass per candidate is slow on CPUs);
                         ``bm25_same_queries`` is BM25 on that subset.
``lora_pointwise``       the same reranker with the LoRA adapter ``retrievo train
                         lora-pointwise`` trains (``--lora-lists`` lists, default 60, of one
                         positive + 2 negatives from BM25's top 20 + 1 from ranks 21-100).

Every training run gets ``--minutes`` (default 30) at most; the trainers stop at the
first step past it. Threads: ``--threads`` (default 2) for torch. ``--reuse`` evaluates models already trained in
``--models``; ``--test-slice START:STOP`` evaluates a slice of the test queries (to split a
long evaluation across processes). The exact command is printed first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

KINDS = ("cross_encoder", "dense", "lora")


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def ndcg(rankings, qrels) -> float:
    from retrievo.evaluate.metrics import evaluate

    return round(evaluate(rankings.drop_self_hits(), qrels, ["nDCG@10"])["nDCG@10"], 4)


def zscore_fuse(first, second, weight: float):
    """Per query: ``weight * z(second) + (1 - weight) * z(first)`` over the same candidates."""
    import numpy as np

    from retrievo.types import Rankings

    lists = []
    for a, b in zip(first, second):
        sa = dict(zip(a.doc_ids.tolist(), a.scores.tolist()))
        sb = dict(zip(b.doc_ids.tolist(), b.scores.tolist()))
        ids = list(sa)
        va = np.array([sa[d] for d in ids], dtype=np.float64)
        vb = np.array([sb[d] for d in ids], dtype=np.float64)
        z = [(v - v.mean()) / v.std() if len(v) > 1 and v.std() > 0 else np.zeros_like(v) for v in (va, vb)]
        fused = weight * z[1] + (1.0 - weight) * z[0]
        order = np.lexsort((np.arange(len(ids)), -fused))
        lists.append(([ids[i] for i in order], fused[order]))
    return Rankings.from_lists(first.queries, lists)


def rerank_top(first, second, depth: int):
    """Per query: the ``depth`` best of ``first``, ordered by their ``second`` scores (ties keep
    ``first``'s order) -- ``first % depth >> second`` from scores ``second`` holds for a deeper cut."""
    import numpy as np

    from retrievo.types import Rankings

    lists = []
    for a, b in zip(first, second):
        sb = dict(zip(b.doc_ids.tolist(), b.scores.tolist()))
        ids = a.doc_ids.tolist()[:depth]
        scores = np.array([sb[d] for d in ids], dtype=np.float64)
        order = np.lexsort((np.arange(len(ids)), -scores))
        lists.append(([ids[i] for i in order], scores[order]))
    return Rankings.from_lists(first.queries, lists)


def summarise(values: list[float], runs: list[tuple[float, float]], extra: dict | None = None) -> dict:
    """Mean (and spread over seeds) of nDCG@10; wall and CPU minutes of the training runs."""
    row = {"ndcg@10": round(statistics.fmean(values), 4),
           "train_minutes": round(statistics.fmean(m for m, _ in runs), 1),
           "train_cpu_minutes": round(statistics.fmean(c for _, c in runs), 1)}
    if len(values) > 1:
        row.update({"ndcg@10_per_seed": values, "ndcg@10_std": round(statistics.stdev(values), 4),
                    "ndcg@10_min": min(values), "ndcg@10_max": max(values)})
    if extra:
        row.update(extra)
    return row


class Bench:
    def __init__(self, args):
        from retrievo.data.beir import BeirDataset
        from retrievo.pipeline import parse
        from retrievo.train.data import open_index

        self.args = args
        self.data = BeirDataset(args.data_dir)
        self.test_queries = self.data.queries("test")
        if args.test_slice:
            lo, _, hi = args.test_slice.partition(":")
            ids = self.test_queries.ids[int(lo or 0):int(hi) if hi else None]
            self.test_queries = self.test_queries.subset(ids)
            log(f"test queries {args.test_slice}: {len(ids)} of {len(self.data.queries('test'))}")
        self.test_qrels = self.data.qrels("test").subset(self.test_queries.ids)
        log("indexing the corpus (BM25, stored documents) ...")
        self.index = open_index(args.data_dir, None, progress=False)
        self.parse = lambda spec: parse(spec, {"index": self.index})
        self.bm25_test = self.parse(f"bm25 % {args.depth}")(self.test_queries)
        self.models = Path(args.models)
        self.models.mkdir(parents=True, exist_ok=True)

    def dev_split(self, manifest: dict):
        from retrievo.train.data import carve_dev, load_judgments

        hp = manifest["hyperparameters"]
        judged = load_judgments(self.args.data_dir, manifest["data"]["split"])
        _, dev = carve_dev(judged.queries.ids, hp["dev_fraction"], hp["dev_seed"])
        qrels = self.data.qrels(manifest["data"]["split"]).subset(dev)
        return judged.queries.subset(dev), qrels

    def trained(self, folder: Path, train) -> tuple[Path, tuple[float, float]]:
        """Train into ``folder`` (or reuse a finished model there with --reuse); the wall and
        CPU minutes the training took."""
        from retrievo.train.manifest import read_manifest

        manifest = read_manifest(folder) if self.args.reuse else None
        if manifest is None:
            train(folder)
            manifest = read_manifest(folder)
        else:
            log(f"  reusing {folder}")
        outcome = manifest["outcome"]
        return folder, (outcome["seconds"] / 60, outcome.get("cpu_seconds", 0.0) / 60)

    # ------------------------------------------------------------------ cross-encoder
    def cross_encoder(self, seeds: list[int]) -> dict:
        from retrievo.train.cross_encoder import CrossEncoderConfig, train_cross_encoder
        from retrievo.train.manifest import read_manifest

        pure, fused, minutes, weights, depths, pure_full = [], [], [], [], [], []
        grid_depths = sorted({int(d) for d in self.args.pure_depths.split(",") if d.strip()})
        for seed in seeds:
            config = CrossEncoderConfig(seed=seed, minutes=self.args.minutes)
            log(f"cross-encoder, seed {seed}: training ...")
            folder, took = self.trained(self.models / f"cross-encoder-seed{seed}", lambda out: train_cross_encoder(
                self.args.data_dir, out, config=config, index=self.index, restart=True, progress=self.args.progress))
            stage = self.parse(f"cross_encoder(model='{folder}', max_length={config.max_length}, batch_size=64)")
            # Dev (carved from train, never test) picks the fusion weight and the pure reranking depth.
            manifest = read_manifest(folder)
            dev_q, dev_qrels = self.dev_split(manifest)
            need = max(grid_depths) if len(grid_depths) > 1 else 0
            if self.args.fusion_weight is None:
                need = max(need, self.args.dev_depth)
            bm25_dev = self.parse(f"bm25 % {need}")(dev_q) if need else None
            ce_dev = stage(bm25_dev) if need else None
            if self.args.fusion_weight is None:
                grid = [round(0.05 * i, 2) for i in range(21)]
                top = bm25_dev.cut(self.args.dev_depth)
                on_dev = {w: ndcg(zscore_fuse(top, ce_dev, w), dev_qrels) for w in grid}
                w = max(grid, key=lambda g: (on_dev[g], -abs(g - 0.5)))
                log(f"  dev nDCG@10 by weight: {on_dev}; chosen w={w}")
            else:
                w = self.args.fusion_weight
                log(f"  fusion weight {w} as given (--fusion-weight)")
            if len(grid_depths) > 1:
                by_depth = {d: ndcg(rerank_top(bm25_dev, ce_dev, d), dev_qrels) for d in grid_depths}
                depth = max(grid_depths, key=lambda d: (by_depth[d], d))
                log(f"  dev nDCG@10 by reranking depth: {by_depth}; chosen depth={depth}")
            else:
                depth = grid_depths[0]
            test_depth = depth if self.args.no_fused else max(depth, self.args.depth)
            ce_test = stage(self.bm25_test.cut(test_depth))
            pure.append(ndcg(rerank_top(self.bm25_test, ce_test, depth), self.test_qrels))
            if test_depth >= self.args.depth:
                pure_full.append(ndcg(rerank_top(self.bm25_test, ce_test, self.args.depth), self.test_qrels))
            if not self.args.no_fused:
                fused.append(ndcg(zscore_fuse(self.bm25_test, ce_test, w), self.test_qrels))
            minutes.append(took)
            weights.append(w)
            depths.append(depth)
            log(f"  seed {seed}: pure {pure[-1]} (depth {depth}), fused {fused[-1] if fused else '-'} (w={w}), "
                f"{took[0]:.1f} min")
        rows = {"cross_encoder": summarise(pure, minutes, {"depths": depths})}
        if pure_full and len(pure_full) == len(pure) and depths != [self.args.depth] * len(depths):
            rows["cross_encoder"][f"ndcg@10_depth{self.args.depth}"] = round(statistics.fmean(pure_full), 4)
        if fused:
            rows["cross_encoder_fused"] = summarise(fused, minutes, {"weights": weights})
        return rows

    # ------------------------------------------------------------------ bi-encoder
    def dense(self, seeds: list[int]) -> dict:
        from retrievo.train.bi_encoder import BiEncoderConfig, train_bi_encoder

        length = self.args.dense_max_length

        def dense_ndcg(model: str | None) -> float:
            spec = f"dense(model='{model or 'all-MiniLM-L6-v2'}?max_length={length}', k=100)"
            return ndcg(self.parse(spec)(self.test_queries), self.test_qrels)

        log(f"dense, base all-MiniLM-L6-v2 (max_length {length}) ...")
        results = {"dense_base": {"ndcg@10": dense_ndcg(None), "train_minutes": 0.0}}
        scores, minutes = [], []
        for seed in seeds:
            config = BiEncoderConfig(seed=seed, minutes=self.args.minutes, max_length=length)
            log(f"bi-encoder, seed {seed}: training ...")
            folder, took = self.trained(self.models / f"bi-encoder-seed{seed}", lambda out: train_bi_encoder(
                self.args.data_dir, out, config=config, index=self.index, restart=True, progress=self.args.progress))
            scores.append(dense_ndcg(str(folder)))
            minutes.append(took)
            log(f"  seed {seed}: {scores[-1]}, {took[0]:.1f} min")
        results["dense_trained"] = summarise(scores, minutes)
        return results

    # ------------------------------------------------------------------ LoRA pointwise
    def lora(self, seeds: list[int]) -> dict:
        from retrievo.train.lora_pointwise import LoraConfig, train_lora_pointwise

        depth = self.args.lora_depth
        qids = self.test_queries.ids[:self.args.lora_queries] if self.args.lora_queries else self.test_queries.ids
        first = self.bm25_test.subset(qids).cut(depth)
        qrels = self.test_qrels.subset(qids)
        subset = {"depth": depth, "queries": len(qids), "bm25_same_queries": ndcg(first, qrels)}

        def pointwise(model: str) -> float:
            stage = self.parse(f"pointwise(model='{model}', max_passage_tokens={LoraConfig.max_passage_tokens})")
            start = time.perf_counter()
            score = ndcg(stage(first), qrels)
            log(f"  {model}: {score} ({(time.perf_counter() - start) / len(qids):.2f} s/query)")
            return score

        base = f"smollm2?dtype=fp32&threads={self.args.threads}"
        log(f"pointwise zero-shot, BM25 top {depth} of {len(qids)} test queries ...")
        results = {"zero_shot_pointwise": {"ndcg@10": pointwise(base), "train_minutes": 0.0, **subset}}
        scores, minutes = [], []
        for seed in seeds:
            config = LoraConfig(seed=seed, minutes=self.args.minutes, lists=self.args.lora_lists,
                                dev_queries=10, evaluations=1)
            log(f"LoRA pointwise, seed {seed}: training ...")
            folder, took = self.trained(self.models / f"lora-pointwise-seed{seed}", lambda out: train_lora_pointwise(
                self.args.data_dir, out, config=config, index=self.index, restart=True, progress=self.args.progress))
            scores.append(pointwise(f"{base}&adapter={folder}"))
            minutes.append(took)
        results["lora_pointwise"] = summarise(scores, minutes, subset)
        return results


def main() -> None:
    default_data = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "scifact")
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data_dir", nargs="?", default=os.path.normpath(default_data))
    ap.add_argument("--json", action="store_true", help="print one JSON object keyed by row")
    ap.add_argument("--minutes", type=float, default=30.0, help="time budget of each training run (default 30)")
    ap.add_argument("--seeds", default="1", help="comma-separated training seeds (default 1)")
    ap.add_argument("--only", default="", help="comma-separated kinds: cross_encoder,dense,lora (default: all)")
    ap.add_argument("--depth", type=int, default=100, help="BM25 candidates the cross-encoder reranks (default 100)")
    ap.add_argument("--pure-depths", default="10,20,30,50,100", help="reranking depths the pure cross-encoder "
                    "row chooses from on dev (the best dev nDCG@10, ties to the deeper; one value: no choice; "
                    "default 10,20,30,50,100)")
    ap.add_argument("--no-fused", action="store_true", help="skip the fused row (scores only the chosen depth)")
    ap.add_argument("--dev-depth", type=int, default=30, help="BM25 candidates of the dev queries the fusion "
                    "weight is chosen on (default 30)")
    ap.add_argument("--lora-depth", type=int, default=10, help="BM25 candidates the pointwise LLM reranks "
                    "(default 10)")
    ap.add_argument("--dense-max-length", type=int, default=256, help="tokens per text for the dense rows, base "
                    "and trained alike, and for bi-encoder training (default 256, the model's own)")
    ap.add_argument("--lora-queries", type=int, default=30, help="first N test queries for the pointwise rows "
                    "(default 30; 0: all 300); an LLM pass per candidate is slow on CPUs")
    ap.add_argument("--lora-lists", type=int, default=60, help="LoRA training lists (default 60)")
    ap.add_argument("--test-slice", default="", help="START:STOP: only these test queries (queries.jsonl order), "
                    "to split a long evaluation across processes; every row averages over the slice, so the "
                    "slices' values weighted by their query counts give the full mean")
    ap.add_argument("--fusion-weight", type=float, default=None, help="use this cross-encoder weight instead of "
                    "choosing one on dev (the weight an earlier run of the same model chose on dev, when a long "
                    "evaluation is split across processes)")
    ap.add_argument("--models", default="", help="folder for the trained models (default: a temporary one)")
    ap.add_argument("--reuse", action="store_true", help="evaluate models already finished in --models")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--progress", action="store_true", help="show the trainers' progress bars")
    args = ap.parse_args()
    command = "python bench/train_scifact.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    log(f"# {command}\n# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("RETRIEVO_LLM_CACHE", None)
    import torch

    torch.set_num_threads(args.threads)
    depths = [int(d) for d in args.pure_depths.split(",") if d.strip()]
    if not depths or min(depths) < 1 or max(depths) > args.depth:
        ap.error(f"--pure-depths needs values in 1..--depth ({args.depth}), got {args.pure_depths!r}")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    kinds = [k for k in (args.only.split(",") if args.only else KINDS) if k]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        ap.error(f"unknown kind(s) {', '.join(unknown)}; known: {', '.join(KINDS)}")
    scratch = None
    if not args.models:
        scratch = tempfile.TemporaryDirectory(prefix="train-scifact-")
        args.models = scratch.name
    bench = Bench(args)
    results = {"bm25": {"ndcg@10": ndcg(bench.bm25_test, bench.test_qrels), "train_minutes": 0.0}}
    log(f"bm25: {results['bm25']}")
    for kind in kinds:
        results.update(getattr(bench, kind)(seeds))
        log(json.dumps(results))
    if scratch is not None:
        scratch.cleanup()
    if args.json:
        print(json.dumps(results))
    else:
        print(f"{'row':<22} {'nDCG@10':>8} {'spread':>8} {'train min':>10}")
        for name, row in results.items():
            spread = f"{row['ndcg@10_std']:.4f}" if "ndcg@10_std" in row else "-"
            print(f"{name:<22} {row['ndcg@10']:>8.4f} {spread:>8} {row['train_minutes']:>10.1f}")
    print(f"\n{command}")


if __name__ == "__main__":
    main()

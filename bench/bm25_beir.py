#!/usr/bin/env python
"""BM25 head to head on one BEIR dataset: retrievo vs bm25s vs rank_bm25.

    python bench/bm25_beir.py DATA_DIR [--json] [--split test] [--k 1000] [--repeat 3]
                              [--systems retrievo,bm25s,rank_bm25]

Every system starts from the same in-memory documents (read once per worker with
retrievo's BEIR reader; reading/parsing the corpus file is *not* part of the index time)
and from raw query text (query analysis/tokenisation *is* part of every query time). Each
system runs in its own fresh ``python`` subprocess (this script re-invoked with the hidden
``--worker SYSTEM`` flag), so its peak RSS is its own and nothing it allocates or
JIT-compiles leaks into another system's numbers.

Measured per system
  nDCG@10, R@100   retrievo's ``evaluate`` (ir_measures) on the split, BEIR convention
                   (``drop_self_hits=True``); identical for every system.
  index s          documents -> searchable index, tokenisation included; best of --repeat.
                   retrievo: ``InvertedIndex.build`` (defaults: analysis in one worker
                   process per core; the report adds the ``workers=1`` time) + ``BM25``
                   impacts precomputed (a one-query warm call), so the first real query
                   pays nothing extra; the analyzer's token cache is cleared per build.
                   bm25s: ``bm25s.tokenize`` + ``BM25(...).index``.
                   rank_bm25: ``bm25s.tokenize`` (same tokens as bm25s) + ``BM25Okapi``.
  qps single 1t    one query at a time (text in, ranked doc ids out), 1 thread.
  qps batch 1t/2t  all queries in one call, 1 / 2 threads (retrievo ``threads=``, bm25s
                   ``n_threads=``); rank_bm25 is single threaded: its 2t column is n/a.
  peak RSS MB      the worker process's ``ru_maxrss`` after indexing and querying (taken
                   before evaluation, so ir_measures' dicts do not count); for retrievo
                   at least the sampled RSS + USS of its process tree during a build.

JIT code (numba, used by retrievo and bm25s) is compiled on a 200-document warm-up index
before anything is timed. Index time is the best of --repeat builds; throughput is the
best of --repeat samples, each sample repeating the whole query set until it lasts >= 0.5 s
(a 300-query batch alone takes only tens of milliseconds); all timed with
``time.perf_counter``. rank_bm25 scores every document in Python for every query term, so
its throughput is timed once on the first --rank-bm25-sample queries (default 100) and its
effectiveness is computed on all queries when that is estimated to take < 60 s, otherwise
on the sample (the output says which).

``--json`` prints one JSON object keyed by system name with ``ndcg@10``, ``r@100``,
``index_s``, ``qps`` (batch, 1 thread), ``qps_2t`` (batch, 2 threads; null for rank_bm25),
``qps_single`` and ``peak_rss_mb``; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import gc
import inspect
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

SYSTEMS = ("retrievo", "bm25s", "rank_bm25")
METRICS = ["nDCG@10", "R@100"]
MT = 2  # the multi-threaded batch setting (the same for every system)
WARMUP_DOCS = 200
WARMUP_QUERIES = 5
RANK_BM25_FULL_EVAL_BUDGET_S = 60.0


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB, macOS in bytes
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Best wall time of ``repeat`` calls and the last call's result."""
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        out = None
        gc.collect()
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def sampled_tree_peak_mb(fn: Callable[[], object], interval: float = 0.02) -> tuple[float, int | None]:
    """Run ``fn`` while sampling the memory of this process and its children: this
    process's RSS plus each child's USS (pages only it holds; forked children share the
    rest with the parent). Returns the peak in MB and the most child processes seen at
    once, or ``(0.0, None)`` without psutil."""
    try:
        import psutil
    except ImportError:
        fn()
        return 0.0, None
    me = psutil.Process()
    peak = most = 0
    stop = threading.Event()

    def loop():
        nonlocal peak, most
        while not stop.is_set():
            try:
                total = me.memory_info().rss
                children = me.children(recursive=True)
                most = max(most, len(children))
                for child in children:
                    try:
                        total += child.memory_full_info().uss
                    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                        pass
                peak = max(peak, total)
            except psutil.Error:
                pass
            stop.wait(interval)

    sampler = threading.Thread(target=loop, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        stop.set()
        sampler.join()
    return peak / (1024 * 1024), most


def best_rate(fn: Callable[[], object], n_items: int, repeat: int, min_time: float = 0.5) -> tuple[float, object]:
    """Best items/second over ``repeat`` timed samples, and the first call's result.

    One batch over a small query set takes only tens of milliseconds, which is too short
    to time reliably (thread wake-up, timer and scheduler noise), so each sample calls
    ``fn`` as many times as it takes to last about ``min_time`` seconds (as ``timeit``
    does); the first, calibrating call also serves as a final warm-up.
    """
    gc.collect()
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    inner = max(1, int(min_time / max(first, 1e-9)) + 1) if first < min_time else 1
    best = float("inf")
    for _ in range(max(1, repeat)):
        gc.collect()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return n_items / best, out


# ======================================================================================
# Workers: one system each, in a fresh process
# ======================================================================================
def load_data(data_dir: str, split: str):
    from retrievo.data import BeirDataset

    ds = BeirDataset(data_dir)
    t0 = time.perf_counter()
    docs = list(ds.iter_documents())
    load_s = time.perf_counter() - t0
    queries = ds.queries(split)
    qrels = ds.qrels(split)
    return docs, queries, qrels, load_s


def evaluate_run(rankings, qrels, drop_self_hits: bool = True) -> dict[str, float]:
    from retrievo.evaluate import evaluate

    scores = evaluate(rankings, qrels, METRICS, drop_self_hits=drop_self_hits)
    return {"ndcg@10": scores["nDCG@10"], "r@100": scores["R@100"]}


def rankings_from_topk(queries, doc_ids, idx, scores):
    """Rankings from dense ``[Q, k]`` top-k arrays, dropping non-matching (score <= 0)
    padding, which bm25s and a plain argpartition return but a Lucene-style engine does not."""
    import numpy as np

    from retrievo.types import Rankings

    keep = scores > 0
    counts = keep.sum(axis=1)
    offsets = np.zeros(len(queries) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return Rankings(queries, doc_ids[idx[keep]], scores[keep], offsets)


def worker_retrievo(docs, queries, args) -> dict:
    from retrievo.index import InvertedIndex
    from retrievo.retrieve import BM25
    from retrievo.text import get_analyzer
    from retrievo.types import Queries

    k = args.k
    warm_q = Queries(["warm"], ["warm up"])

    # InvertedIndex.build analyses text in worker processes (one per core) unless workers=1
    has_workers = "workers" in inspect.signature(InvertedIndex.build).parameters
    try:
        from retrievo.index.ingest import default_workers
        n_workers = default_workers() if has_workers else 1
    except ImportError:
        n_workers = None

    def build(documents, workers=None):
        # start from a cold analyzer: the default analyzer is process-wide and memoises
        # token -> term, so without this a repeated build would reuse the previous one's work
        clear = getattr(get_analyzer(), "clear_cache", None)
        if clear is not None:
            clear()
        index = InvertedIndex.build(documents, **({"workers": workers} if workers and has_workers else {}))
        bm = BM25(index, k1=0.9, b=0.4, method="lucene", k=k, threads=1)
        bm(warm_q)  # precompute the impacts (bm25s does the same inside .index())
        return index, bm

    # JIT warm-up on a small index (1 and MT threads), nothing timed
    small, bm_small = build(docs[:WARMUP_DOCS])
    wq = queries.subset(queries.ids[:WARMUP_QUERIES])
    bm_small(wq)
    BM25(small, k=k, threads=MT)(wq)
    for qid, text in zip(wq.ids, wq.texts):
        bm_small(Queries([qid], [text]))
    del small, bm_small

    # memory of the whole process tree during one untimed build (the analysis workers are
    # separate processes, invisible to this process's ru_maxrss)
    tree_peak, children = sampled_tree_peak_mb(lambda: build(docs) and None)
    notes = []
    if has_workers and n_workers != 1:
        index_1w, _ = best_time(lambda: build(docs, workers=1), args.repeat)
        how = ("analysed in-process: too small for worker processes" if children == 0 else
               f"{children} analysis worker processes" if children else f"up to {n_workers} analysis worker processes")
        notes.append(f"retrievo: index s with default workers ({how}); "
                     f"with workers=1 (one core, like bm25s) {index_1w:.2f} s")
    else:
        index_1w = None
    index_s, (index, _) = best_time(lambda: build(docs), args.repeat)
    # two independent retrievers (each computes its own impacts): sharing one BM25's state
    # would also share its scratch workspace, whose size sets the kernel's thread count
    bm1 = BM25(index, k1=0.9, b=0.4, method="lucene", k=k, threads=1)
    bm2 = BM25(index, k1=0.9, b=0.4, method="lucene", k=k, threads=MT)
    bm1(wq), bm2(wq)

    def single():
        for qid, text in zip(queries.ids, queries.texts):
            bm1(Queries([qid], [text]))

    n = len(queries)
    qps, run = best_rate(lambda: bm1(queries), n, args.repeat)
    qps_2t, _ = best_rate(lambda: bm2(queries), n, args.repeat)
    qps_single, _ = best_rate(single, n, args.repeat)
    if tree_peak and children:
        notes.append(f"retrievo: peak RSS includes the analysis worker processes (parent RSS + workers' "
                     f"unique memory, sampled every 20 ms during an extra build: {tree_peak:.0f} MB)")
    notes.append(f"retrievo: {index.vocab_size} terms, {index.total_docs} docs")
    return {"run": run, "index_s": index_s, "index_s_1w": index_1w, "qps": qps, "qps_2t": qps_2t,
            "qps_single": qps_single, "tree_peak_mb": tree_peak, "notes": notes}


def worker_bm25s(docs, queries, args) -> dict:
    import bm25s
    import numpy as np
    import Stemmer

    query_stemmer = Stemmer.Stemmer("english")
    doc_ids = np.array([d.doc_id for d in docs], dtype=object)

    def tok(texts, return_ids=True, stemmer=query_stemmer):
        return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=return_ids, show_progress=False)

    def build(documents):
        # a fresh stemmer (PyStemmer memoises words) so that every build starts cold
        corpus_tokens = tok([f"{d.title} {d.text}" for d in documents], stemmer=Stemmer.Stemmer("english"))
        retriever = bm25s.BM25(method="lucene", k1=0.9, b=0.4, backend="numba")
        retriever.index(corpus_tokens, show_progress=False)
        return retriever

    def search(retriever, texts, threads, k):
        q_tokens = tok(list(texts), return_ids=False)
        idx, scores = retriever.retrieve(q_tokens, k=k, n_threads=threads, show_progress=False)
        return idx, scores, doc_ids[idx]  # the caller gets doc ids, as from every system

    # JIT warm-up (CSC builder, scorer, serial and parallel retrieval), nothing timed
    small = build(docs[:WARMUP_DOCS])
    wtexts = queries.texts[:WARMUP_QUERIES]
    kk = min(args.k, WARMUP_DOCS)
    search(small, wtexts, 1, kk), search(small, wtexts, MT, kk), search(small, wtexts[:1], 1, kk)
    del small

    index_s, retriever = best_time(lambda: build(docs), args.repeat)
    k = min(args.k, len(docs))
    search(retriever, wtexts, 1, k), search(retriever, wtexts, MT, k)
    texts = list(queries.texts)

    def single():
        for text in texts:
            search(retriever, [text], 1, k)

    n = len(queries)
    qps, (idx, scores, _) = best_rate(lambda: search(retriever, texts, 1, k), n, args.repeat)
    qps_2t, _ = best_rate(lambda: search(retriever, texts, MT, k), n, args.repeat)
    qps_single, _ = best_rate(single, n, args.repeat)
    run = rankings_from_topk(queries, doc_ids, idx, scores)
    return {"run": run, "index_s": index_s, "qps": qps, "qps_2t": qps_2t, "qps_single": qps_single,
            "notes": [f"bm25s {bm25s.__version__}: backend=numba, {len(retriever.vocab_dict)} terms"]}


def worker_rank_bm25(docs, queries, args) -> dict:
    import bm25s
    import numpy as np
    import rank_bm25
    import Stemmer

    query_stemmer = Stemmer.Stemmer("english")
    doc_ids = np.array([d.doc_id for d in docs], dtype=object)
    k = min(args.k, len(docs))

    def tok(texts, stemmer=query_stemmer):
        return bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)

    def build(documents):
        tokens = tok([f"{d.title} {d.text}" for d in documents], stemmer=Stemmer.Stemmer("english"))
        return rank_bm25.BM25Okapi(tokens, k1=0.9, b=0.4)

    def top(bm, tokens):
        scores = bm.get_scores(tokens)
        idx = np.argpartition(-scores, k - 1)[:k]
        idx = idx[np.lexsort((idx, -scores[idx]))]
        return idx, scores[idx]

    def search(bm, texts):
        out = [top(bm, t) for t in tok(list(texts))]
        idx = np.stack([i for i, _ in out])
        scores = np.stack([s for _, s in out]).astype(np.float32)
        return idx, scores, doc_ids[idx]

    index_s, bm = best_time(lambda: build(docs), args.repeat)
    n_all = len(queries)
    n_sample = min(args.rank_bm25_sample, n_all) if args.rank_bm25_sample > 0 else n_all
    sample = queries.subset(queries.ids[:n_sample])
    texts = list(sample.texts)

    def single():
        for text in texts:
            search(bm, [text])

    t1, (idx, scores, _) = best_time(lambda: search(bm, texts), 1)
    ts, _ = best_time(single, 1)
    qps = n_sample / t1
    notes = [f"rank_bm25: qps timed once on the first {n_sample} of {n_all} queries"]
    rest = n_all - n_sample
    if rest and rest / qps <= RANK_BM25_FULL_EVAL_BUDGET_S:
        idx2, scores2, _ = search(bm, queries.texts[n_sample:])
        idx, scores, eval_q = np.vstack([idx, idx2]), np.vstack([scores, scores2]), queries
        notes.append(f"rank_bm25: nDCG@10/R@100 on all {n_all} queries")
    elif rest:
        eval_q = sample
        notes.append(f"rank_bm25: nDCG@10/R@100 on the {n_sample}-query sample only "
                     f"(all {n_all} would take ~{rest / qps:.0f} s more)")
    else:
        eval_q = queries
        notes.append(f"rank_bm25: nDCG@10/R@100 on all {n_all} queries")
    run = rankings_from_topk(eval_q, doc_ids, idx, scores)
    return {"run": run, "index_s": index_s, "qps": qps, "qps_2t": None, "qps_single": n_sample / ts,
            "eval_queries": len(eval_q), "sample": n_sample, "notes": notes}


IMPORTS = {"retrievo": ("retrievo.index", "retrievo.retrieve"), "bm25s": ("bm25s", "Stemmer"),
           "rank_bm25": ("bm25s", "rank_bm25", "Stemmer")}
WORKERS = {"retrievo": worker_retrievo, "bm25s": worker_bm25s, "rank_bm25": worker_rank_bm25}


def run_worker(args) -> None:
    from retrievo.types import Qrels  # noqa: F401  (import before timing anything)

    log(f"[{args.worker}] loading {args.data_dir} ...")
    docs, queries, qrels, load_s = load_data(args.data_dir, args.split)
    log(f"[{args.worker}] {len(docs)} documents, {len(queries)} {args.split} queries (read in {load_s:.2f} s)")
    for module in IMPORTS[args.worker]:
        __import__(module)
    gc.collect()
    base_rss = peak_rss_mb()  # interpreter + imports + the corpus in memory, before any indexing
    out = WORKERS[args.worker](docs, queries, args)
    # before evaluation: ir_measures' dicts are not the system's memory
    rss = max(peak_rss_mb(), out.get("tree_peak_mb") or 0.0)
    run = out.pop("run")
    if len(run.queries) < len(queries):
        # a sample: judge it on its own queries (a judged query missing from the run would count 0)
        qrels = qrels.subset(run.queries.ids)
    metrics = evaluate_run(run, qrels, not args.keep_self_hits)
    out.update(metrics, peak_rss_mb=rss, base_rss_mb=base_rss, n_docs=len(docs), n_queries=len(queries), load_s=load_s)
    log(f"[{args.worker}] " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in out.items() if k != "notes"))
    Path(args.result_file).write_text(json.dumps(out))


# ======================================================================================
# Driver
# ======================================================================================
def machine_info() -> dict[str, str]:
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {}
    for pkg in ("retrievo", "numpy", "numba", "bm25s", "rank-bm25", "PyStemmer"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = "n/a"
    try:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "n/a"
    commit = "n/a"
    try:
        repo = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10).stdout.strip() or "n/a"
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=repo, capture_output=True,
                               text=True, timeout=10).stdout.strip()
        if dirty and commit != "n/a":
            commit += " + uncommitted changes in src/"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": cpu, "cores": str(cores), "commit": commit, "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}", "load": load,
            "versions": ", ".join(f"{k} {v}" for k, v in versions.items())}


def spawn(system: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bm25_beir_") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, os.path.abspath(__file__), args.data_dir, "--worker", system,
               "--result-file", str(result), "--split", args.split, "--k", str(args.k),
               "--repeat", str(args.repeat), "--rank-bm25-sample", str(args.rank_bm25_sample)]
        if args.keep_self_hits:
            cmd.append("--keep-self-hits")
        env = dict(os.environ)
        if int(env.get("NUMBA_NUM_THREADS", "0") or 0) < MT:
            env["NUMBA_NUM_THREADS"] = str(MT)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, stdout=sys.stderr, env=env)  # the worker's chatter is progress
        if proc.returncode != 0 or not result.exists():
            raise SystemExit(f"worker {system} failed with exit code {proc.returncode}")
        out = json.loads(result.read_text())
        log(f"[{system}] worker finished in {time.perf_counter() - t0:.1f} s")
        return out


def fmt(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def ratio(a, b) -> str:
    return "n/a" if a is None or b is None or not b else f"{a / b:.1f}×"


def markdown(results: dict[str, dict], args, info: dict[str, str], command: str) -> str:
    first = next(iter(results.values()))
    lines = [
        f"BM25 on `{args.data_dir}`: {first['n_docs']:,} documents, {first['n_queries']:,} queries "
        f"({args.split} split), k={args.k}",
        "",
        f"| system | nDCG@10 | R@100 | index s | qps single 1t | qps batch 1t | qps batch {MT}t | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        star = "*" if name == "rank_bm25" and r.get("eval_queries", r["n_queries"]) < r["n_queries"] else ""
        lines.append(f"| {name} | {r['ndcg@10']:.4f}{star} | {r['r@100']:.4f}{star} | {r['index_s']:.2f} | "
                     f"{fmt(r['qps_single'], ',.0f')} | {fmt(r['qps'], ',.0f')} | {fmt(r['qps_2t'], ',.0f')} | "
                     f"{r['peak_rss_mb']:.0f} |")
    lines.append("")
    if "retrievo" in results and "bm25s" in results:
        a, b = results["retrievo"], results["bm25s"]
        lines.append(f"retrievo vs bm25s: query throughput {ratio(a['qps'], b['qps'])} (1 thread batch), "
                     f"{ratio(a['qps_2t'], b['qps_2t'])} ({MT} threads batch), "
                     f"{ratio(a['qps_single'], b['qps_single'])} (single query); "
                     f"index time {ratio(b['index_s'], a['index_s'])}"
                     + (f" ({ratio(b['index_s'], a['index_s_1w'])} with retrievo workers=1)" if a.get("index_s_1w") else "")
                     + " (>1× = retrievo faster)")
    if "retrievo" in results and "rank_bm25" in results:
        a, b = results["retrievo"], results["rank_bm25"]
        lines.append(f"retrievo vs rank_bm25: query throughput {ratio(a['qps'], b['qps'])} (1 thread batch), "
                     f"{ratio(a['qps_single'], b['qps_single'])} (single query); "
                     f"index time {ratio(b['index_s'], a['index_s'])} (>1× = retrievo faster)")
    lines.append("")
    notes = [n for r in results.values() for n in r.get("notes", [])]
    if any(r.get("eval_queries", r["n_queries"]) < r["n_queries"] for r in results.values()):
        notes.append("* effectiveness of rank_bm25 on its query sample only")
    notes.append("corpus read + JSON parse (not part of index s): "
                 + ", ".join(f"{n} {r['load_s']:.2f} s" for n, r in results.items()))
    notes.append("nDCG@10 / R@100: retrievo.evaluate (ir_measures) for every system, "
                 + ("self hits kept (--keep-self-hits)" if args.keep_self_hits
                    else "results whose doc id equals the query id dropped (BEIR convention)"))
    notes.append("peak RSS includes the interpreter, imports and the corpus held in memory; before indexing it was "
                 + ", ".join(f"{n} {r['base_rss_mb']:.0f} MB" for n, r in results.items())
                 + " (bm25s JIT-compiles its numba code in-process; retrievo's numba kernels load from numba's on-disk cache)")
    notes.append(f"throughput and index time: best of {args.repeat}; 2t = {MT} threads "
                 f"(retrievo threads=, bm25s n_threads=, NUMBA_NUM_THREADS>={MT}); rank_bm25 has no threads")
    lines += [f"- {n}" for n in notes]
    lines += ["", f"Command: `{command}`",
              f"Machine: {info['cpu']}, {info['cores']} cores, {info['os']}, Python {info['python']}; "
              f"{info['versions']}; retrievo commit {info['commit']}; load average at start {info['load']}",
              f"Date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"]
    return "\n".join(lines)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data_dir", help="BEIR folder (corpus.jsonl[.gz], queries.jsonl, qrels/<split>.tsv)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the markdown report")
    p.add_argument("--split", default="test")
    p.add_argument("--k", type=int, default=1000, help="results per query (default 1000)")
    p.add_argument("--repeat", type=int, default=3, help="best of N for index time and throughput (default 3)")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--rank-bm25-sample", type=int, default=100,
                   help="queries rank_bm25's throughput is timed on (0 = all; default 100)")
    p.add_argument("--keep-self-hits", action="store_true",
                   help="do not drop results whose doc id equals the query id (dropped by default, as BEIR does)")
    p.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.k < 1:
        p.error("--k must be >= 1")
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown or not systems:
        p.error(f"unknown system(s) {unknown}; choose from {', '.join(SYSTEMS)}")
    args.systems = systems
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    command = " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]) if sys.argv[0] else "bench/bm25_beir.py",
                                                 *(sys.argv[1:] if argv is None else argv)])
    command = "python " + command
    info = machine_info()
    log(f"machine: {info['cpu']}, {info['cores']} cores, load {info['load']}")
    results = {system: spawn(system, args) for system in args.systems}
    if args.json:
        keys = ("ndcg@10", "r@100", "index_s", "qps", "qps_2t", "qps_single", "peak_rss_mb")
        print(json.dumps({name: {k: r[k] for k in keys} for name, r in results.items()}, indent=2))
    else:
        print(markdown(results, args, info, command))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""How BM25 costs grow with collection size: retrievo vs bm25s on a synthetic corpus.

    python bench/bm25_scale.py [--docs 100000,300000,1000000] [--json] [--repeat 3]
                               [--systems retrievo,bm25s] [--workdir DIR] [--seed 12]
                               [--generator topical|unigram]

The corpus (:func:`generate`) is synthetic but built from real text, seeded and
documented: its vocabulary and word frequencies are the whitespace-separated words (with
their punctuation and case, so analysis does real work) of the shared SciFact and
HotpotQA corpora; document lengths follow a log-normal fitted to passage collections
(median 50 words, sigma 0.45, clipped to 4..300, close to MS MARCO's passages). Two
generators (``--generator``):

``topical``            each document picks one of the 11,096 real documents as its source
                       and draws each word from it (uniformly over its words) with
                       probability 0.5, otherwise from the unigram distribution: passages
                       about a topic, as in real collections, where the words of a query
                       co-occur in the documents that match it best (about 90 synthetic
                       documents per source at 1M).
``unigram`` (default)  every word drawn independently from the unigram distribution: no
                       co-occurrence at all, so a top document matches only two or three
                       query terms; the worst case for dynamic pruning (the corpus of the
                       tables in BENCHMARKS.md).

The 0.5 share was fixed before any measurement on this corpus, not tuned. Measured at 1M
(BENCHMARKS.md): block-max pruning skips no more on it than on ``unigram``. Document ``i`` is
the same for every size, so the 100,000-document corpus is the first 100,000 lines of the
1,000,000-document one. It is written once as JSONL under ``--workdir`` and every build
streams it from that file. Queries: the 300 SciFact test queries and the 600 HotpotQA
questions (real text, 900 queries).

Each measurement runs in a fresh ``python`` subprocess (this script with ``--worker``), so
peak RSS (``ru_maxrss``; with analysis workers, the sampled RSS of the process plus its
children's unique memory) is that task's own. Per size and system:

  index_s, index_s_2w   documents streamed from the file -> searchable index on disk, one
                        analysis worker / two (retrievo ``workers=``; bm25s has no parallel
                        indexing: null), BM25 impacts included (one warm query; for retrievo
                        that also writes them to the index's cache, retrievo.index.scorecache)
  peak_rss_mb           peak RSS of the one-worker build process
  index_mb              bytes on disk (retrievo: postings, ids and vocabulary, ``store=False``
                        like bm25s, which keeps no text, without the impact cache; bm25s:
                        ``save()``)
  qps_k10, qps_k1000    900 queries in one batch, one thread, raw text in, ids out, best of
                        --repeat samples of >= 0.5 s; retrievo with its default
                        ``pruning="auto"``
  qps_k10_exhaustive    retrievo, ``pruning="off"`` (the pruned results are checked equal)
  qps_k10_numpy_backend, qps_k1000_numpy_backend
                        bm25s only: the same bm25s index queried through bm25s's default
                        backend (``bm25s.BM25()``: scipy/numpy scoring, "scipy sparse, one
                        core"); ``qps_k10``/``qps_k1000`` of bm25s use its numba backend,
                        the faster of the two
  merge_*               retrievo: an index built as 8 segments (``merge=False``), then merged
                        in a fresh process: peak RSS of that process against the index size

Throughputs come with ``_cpu`` twins (queries per CPU second of the process) and builds
with ``index_cpu_s``: on a machine shared with other work they are the steadier figures.
``scifact_single_core_indexing`` (skip with ``--no-scifact``): SciFact indexed on one core
by retrievo (``workers=1``) and bm25s alternately, ``--repeat`` times each.

``--json`` prints one object keyed by size (as a string), then by system.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
SYSTEMS = ("retrievo", "bm25s")
MEDIAN_WORDS, SIGMA, MIN_WORDS, MAX_WORDS = 50, 0.45, 4, 300
TOPICAL_SHARE = 0.5  # topical corpus: each word comes from the document's source with this probability
GENERATORS = ("topical", "unigram")


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tree_peak_mb(fn, interval: float = 0.05) -> tuple[float, object]:
    """Run ``fn`` sampling this process's RSS plus its children's unique memory."""
    import psutil

    me, peak, stop = psutil.Process(), [0], threading.Event()

    def loop():
        while not stop.is_set():
            try:
                total = me.memory_info().rss
                for child in me.children(recursive=True):
                    try:
                        total += child.memory_full_info().uss
                    except psutil.Error:
                        pass
                peak[0] = max(peak[0], total)
            except psutil.Error:
                pass
            stop.wait(interval)

    sampler = threading.Thread(target=loop, daemon=True)
    sampler.start()
    try:
        out = fn()
    finally:
        stop.set()
        sampler.join()
    return max(peak[0] / 2**20, peak_rss_mb()), out


def best_rate(fn, n_items: int, repeat: int, min_time: float = 0.5) -> tuple[list[float], list[float]]:
    """Items per wall second and per CPU second of this process, for each of ``repeat``
    samples (each lasting >= ``min_time``). On a machine shared with other work the CPU
    rate is the steadier figure (one thread: equal to the wall rate when idle)."""
    gc.collect()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    inner = max(1, int(min_time / max(first, 1e-9)) + 1) if first < min_time else 1
    wall, cpu = [], []
    for _ in range(max(1, repeat)):
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(inner):
            fn()
        wall.append(n_items * inner / (time.perf_counter() - t0))
        cpu.append(n_items * inner / (time.process_time() - c0))
    return wall, cpu


# ====================================================================== the corpus
def _read_jsonl(path: Path):
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


def _source_texts(data: Path) -> list[list[str]]:
    """The shared SciFact and HotpotQA documents as whitespace-separated words."""
    return [f"{rec.get('title', '')} {rec.get('text', '')}".split()
            for name in ("scifact/corpus.jsonl.gz", "hotpotqa/corpus.jsonl") for rec in _read_jsonl(data / name)]


def generate(path: Path, n_docs: int, seed: int, data: Path, generator: str = "unigram") -> None:
    """Write ``n_docs`` synthetic documents (see the module docstring) to ``path``."""
    import numpy as np

    sources = _source_texts(data)
    counts: Counter[str] = Counter(w for words in sources for w in words)
    words = sorted(counts)  # a fixed order, so the seed alone decides the corpus
    freq = np.array([counts[w] for w in words], dtype=np.float64)
    cdf = np.cumsum(freq / freq.sum())
    vocab = np.array(words, dtype=object)
    number = {w: i for i, w in enumerate(words)}
    # topical: every real document's words as vocabulary numbers, one flat array
    src_words = np.array([number[w] for text in sources for w in text], dtype=np.int64)
    src_len = np.array([len(text) for text in sources], dtype=np.int64)
    src_start = np.concatenate([[0], np.cumsum(src_len)[:-1]])
    usable = np.flatnonzero(src_len > 0)
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for start in range(0, n_docs, 20_000):
            n = min(20_000, n_docs - start)
            lengths = np.clip(np.rint(rng.lognormal(np.log(MEDIAN_WORDS), SIGMA, n)), MIN_WORDS, MAX_WORDS)
            lengths = lengths.astype(np.int64)
            total = int(lengths.sum())
            picks = np.searchsorted(cdf, rng.random(total), side="right")
            picks = np.minimum(picks, len(words) - 1)
            if generator == "topical":
                doc_source = usable[rng.integers(0, len(usable), n)]
                of_word = np.repeat(doc_source, lengths)  # each word's document's source
                topical = rng.random(total) < TOPICAL_SHARE
                src = of_word[topical]
                offset = (rng.random(int(topical.sum())) * src_len[src]).astype(np.int64)
                picks[topical] = src_words[src_start[src] + offset]
            text = vocab[picks]
            ends = np.cumsum(lengths)
            lines = []
            for i in range(n):
                body = " ".join(text[ends[i] - lengths[i]:ends[i]])
                lines.append(json.dumps({"_id": f"d{start + i:07d}", "title": "", "text": body}))
            out.write("\n".join(lines) + "\n")
    os.replace(tmp, path)
    log(f"wrote {n_docs:,} {generator} documents ({len(words):,} distinct words) to {path}")


def corpus_file(workdir: Path, n_docs: int, seed: int, data: Path, generator: str = "unigram") -> Path:
    kind = "" if generator == "unigram" else f"{generator}-"  # unigram keeps the earlier runs' file name
    name = f"synthetic-{kind}seed{seed}-{n_docs}.jsonl"
    path = workdir / name
    if not path.exists():
        generate(path, n_docs, seed, data, generator)
    return path


def iter_docs(path: Path, n_docs: int):
    from retrievo.types import Document

    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= n_docs:
                return
            rec = json.loads(line)
            yield Document(rec["_id"], rec["text"], rec["title"])


def load_queries(data: Path) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    test = {line.split("\t")[0] for line in (data / "scifact/qrels/test.tsv").read_text().splitlines()[1:]}
    for rec in _read_jsonl(data / "scifact/queries.jsonl"):
        if rec["_id"] in test:
            ids.append(f"sf-{rec['_id']}")
            texts.append(rec["text"])
    for rec in _read_jsonl(data / "hotpotqa/queries.jsonl"):
        ids.append(f"hp-{rec['_id']}")
        texts.append(rec["text"])
    return ids, texts


# ====================================================================== workers
def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def work_retrievo_build(args) -> dict:
    from retrievo.index import InvertedIndex
    from retrievo.retrieve import BM25
    from retrievo.text import get_analyzer
    from retrievo.types import Queries

    where = Path(args.index_dir)
    # untimed warm-up: imports, numba kernels loaded from their cache, analyzer code paths
    warm = InvertedIndex.build(iter_docs(Path(args.corpus), 50), workers=1, store=False)
    BM25(warm, k=10, threads=1)(Queries(["w"], ["warm up"]))
    get_analyzer().clear_cache()  # start cold: the token -> term cache is part of the work
    del warm

    def build():
        t0, c0 = time.perf_counter(), time.process_time()
        index = InvertedIndex.build(iter_docs(Path(args.corpus), args.n), where, store=False,
                                    workers=args.workers, segment_docs=args.segment_docs,
                                    merge=not args.no_merge)
        BM25(index, k=10, threads=1)(Queries(["w"], ["warm up"]))
        return time.perf_counter() - t0, time.process_time() - c0, index

    peak, (secs, cpu, index) = tree_peak_mb(build)
    return {"index_s": secs, "index_cpu_s": cpu, "peak_rss_mb": peak, "index_mb": index.size_on_disk() / 1e6,
            "segments": len(index.segments), "postings": int(sum(s.n_postings for s in index.segments))}


def work_retrievo_merge(args) -> dict:
    from retrievo.index import InvertedIndex

    index = InvertedIndex.open(args.index_dir)
    before = (len(index.segments), index.size_on_disk() / 1e6)
    base = peak_rss_mb()
    t0 = time.perf_counter()
    index.merge()
    return {"merge_s": time.perf_counter() - t0, "merge_peak_rss_mb": peak_rss_mb(), "merge_base_rss_mb": base,
            "merge_segments": before[0], "merge_index_mb": before[1]}


def work_retrievo_query(args) -> dict:
    import numpy as np

    from retrievo.index import InvertedIndex
    from retrievo.retrieve import BM25
    from retrievo.types import Queries

    index = InvertedIndex.open(args.index_dir)
    ids, texts = load_queries(Path(args.data))
    queries = Queries(ids, texts)
    out = {}
    runs = {}
    for name, k, pruning in (("qps_k10", 10, "auto"), ("qps_k10_exhaustive", 10, "off"),
                             ("qps_k1000", 1000, "auto"), ("qps_k1000_exhaustive", 1000, "off")):
        bm = BM25(index, k=k, threads=1, pruning=pruning)
        rates, cpu = best_rate(lambda: bm(queries), len(queries), args.repeat)
        out[name], out[name + "_all"], out[name + "_cpu"] = max(rates), rates, max(cpu)
        runs[name] = bm(queries)
        log(f"[retrievo] {name}: {', '.join(f'{r:.0f}' for r in rates)} q/s, {max(cpu):.0f} per CPU s "
            f"(pruning: {bm.pruning})")
    for k in ("k10", "k1000"):
        a, b = runs[f"qps_{k}"], runs[f"qps_{k}_exhaustive"]
        same = (np.array_equal(a.doc_ids, b.doc_ids) and np.array_equal(a.scores, b.scores)
                and np.array_equal(a.offsets, b.offsets))
        out[f"pruned_equals_exhaustive_{k}"] = bool(same)
        if not same:
            log(f"[retrievo] WARNING: pruned and exhaustive top-{k} differ")
    return out


def work_bm25s(args) -> dict:
    import bm25s
    import numpy as np
    import Stemmer

    ids, texts = load_queries(Path(args.data))
    stemmer = Stemmer.Stemmer("english")

    def build():
        t0, c0 = time.perf_counter(), time.process_time()
        corpus = [d.text for d in iter_docs(Path(args.corpus), args.n)]
        tokens = bm25s.tokenize(corpus, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False)
        del corpus
        retriever = bm25s.BM25(method="lucene", k1=0.9, b=0.4, backend="numba")
        retriever.index(tokens, show_progress=False)
        return time.perf_counter() - t0, time.process_time() - c0, retriever

    small = bm25s.BM25(method="lucene", k1=0.9, b=0.4, backend="numba")  # JIT warm-up, untimed
    small.index(bm25s.tokenize(texts[:50], stopwords="en", stemmer=stemmer, show_progress=False),
                show_progress=False)
    small.retrieve(bm25s.tokenize(texts[:5], stopwords="en", stemmer=stemmer, return_ids=False,
                                  show_progress=False), k=5, n_threads=1, show_progress=False)
    del small
    secs, cpu, retriever = build()
    out = {"index_s": secs, "index_cpu_s": cpu, "peak_rss_mb": peak_rss_mb(), "index_s_2w": None}
    save = Path(args.index_dir)
    retriever.save(str(save))
    out["index_mb"] = folder_mb(save)

    def search(k):
        q = bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, return_ids=False, show_progress=False)
        return retriever.retrieve(q, k=k, n_threads=1, show_progress=False)

    # numba first, then the same index through bm25s's default backend (scipy/numpy
    # scoring, numpy top-k): what `bm25s.BM25()` gives a user who does not ask for numba
    for backend, suffix in (("numba", ""), ("numpy", "_numpy_backend")):
        retriever.backend = backend
        for k in (10, 1000):
            name = f"qps_k{k}{suffix}"
            rates, cpu = best_rate(lambda: search(k), len(texts), args.repeat)
            out[name], out[name + "_all"], out[name + "_cpu"] = max(rates), rates, max(cpu)
            log(f"[bm25s] {name}: {', '.join(f'{r:.0f}' for r in rates)} q/s, {max(cpu):.0f} per CPU s")
    out["bm25s_version"] = bm25s.__version__
    del np
    return out


def work_scifact_index(args) -> dict:
    """Single-core indexing of SciFact, retrievo (``workers=1``) and bm25s alternately in
    one process, ``--repeat`` times each: documents per wall and per CPU second."""
    import bm25s
    import Stemmer

    from retrievo.index import InvertedIndex
    from retrievo.text import get_analyzer
    from retrievo.types import Document

    docs = [Document(r["_id"], r.get("text", ""), r.get("title", ""))
            for r in _read_jsonl(Path(args.data) / "scifact/corpus.jsonl.gz")]
    texts = [f"{d.title} {d.text}" for d in docs]

    def ours():
        get_analyzer().clear_cache()
        InvertedIndex.build(docs, workers=1, store=False)

    def theirs():
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=Stemmer.Stemmer("english"), show_progress=False)
        bm25s.BM25(method="lucene", k1=0.9, b=0.4, backend="numba").index(tokens, show_progress=False)

    ours(), theirs()  # warm-up
    out = {"retrievo": {"index_s_all": [], "index_cpu_s_all": []}, "bm25s": {"index_s_all": [], "index_cpu_s_all": []}}
    for _ in range(max(1, args.repeat)):
        for name, fn in (("retrievo", ours), ("bm25s", theirs)):
            gc.collect()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            out[name]["index_s_all"].append(time.perf_counter() - t0)
            out[name]["index_cpu_s_all"].append(time.process_time() - c0)
    for res in out.values():
        res["index_s"], res["index_cpu_s"] = min(res["index_s_all"]), min(res["index_cpu_s_all"])
        res["docs_per_s"], res["docs_per_cpu_s"] = len(docs) / res["index_s"], len(docs) / res["index_cpu_s"]
        res["n_docs"] = len(docs)
    log(f"[scifact] single-core indexing: {out}")
    return out


TASKS = {"retrievo-build": work_retrievo_build, "retrievo-merge": work_retrievo_merge,
         "retrievo-query": work_retrievo_query, "bm25s": work_bm25s, "scifact-index": work_scifact_index}


def spawn(task: str, args, **extra) -> dict:
    with tempfile.TemporaryDirectory(prefix="bm25_scale_") as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", task, "--result-file", str(result),
               "--data", str(args.data), "--repeat", str(args.repeat)]
        for key, value in extra.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                cmd.append(flag)
            elif value is not None and value is not False:
                cmd += [flag, str(value)]
        env = dict(os.environ, NUMBA_NUM_THREADS="1")  # equal threads: one for every system
        proc = subprocess.run(cmd, stdout=sys.stderr, env=env)
        if proc.returncode != 0 or not result.exists():
            raise SystemExit(f"worker {task} failed with exit code {proc.returncode}")
        return json.loads(result.read_text())


def run_size(n: int, corpus: Path, args) -> dict[str, dict]:
    out: dict[str, dict] = {}
    work = Path(args.workdir)
    if "retrievo" in args.systems:
        idx = work / f"retrievo-{n}"
        res: dict = {}
        for workers in (2, 1):  # the one-worker build last: its index is the one queried
            shutil.rmtree(idx, ignore_errors=True)
            r = spawn("retrievo-build", args, corpus=corpus, n=n, index_dir=idx, workers=workers)
            log(f"[retrievo] {n:,} docs, {workers} worker(s): {r}")
            if workers == 1:
                res.update(r)
            else:
                res["index_s_2w"], res["peak_rss_mb_2w"] = r["index_s"], r["peak_rss_mb"]
        res.update(spawn("retrievo-query", args, index_dir=idx))
        shutil.rmtree(idx, ignore_errors=True)
        seg = work / f"retrievo-{n}-segments"
        shutil.rmtree(seg, ignore_errors=True)
        r = spawn("retrievo-build", args, corpus=corpus, n=n, index_dir=seg, workers=1,
                  segment_docs=-(-n // 8), no_merge=True)
        res.update(spawn("retrievo-merge", args, index_dir=seg))
        shutil.rmtree(seg, ignore_errors=True)
        log(f"[retrievo] {n:,} docs: {res}")
        out["retrievo"] = res
    if "bm25s" in args.systems:
        save = work / f"bm25s-{n}"
        shutil.rmtree(save, ignore_errors=True)
        out["bm25s"] = spawn("bm25s", args, corpus=corpus, n=n, index_dir=save)
        shutil.rmtree(save, ignore_errors=True)
        log(f"[bm25s] {n:,} docs: {out['bm25s']}")
    return out


def markdown(results: dict, command: str) -> str:
    cols = ("index_s", "index_cpu_s", "index_s_2w", "peak_rss_mb", "index_mb", "qps_k10", "qps_k10_cpu",
            "qps_k10_exhaustive", "qps_k10_exhaustive_cpu", "qps_k1000", "qps_k1000_cpu", "merge_peak_rss_mb",
            "merge_index_mb", "qps_k10_numpy_backend", "qps_k10_numpy_backend_cpu", "qps_k1000_numpy_backend",
            "qps_k1000_numpy_backend_cpu")
    lines = [f"`{command}`", "", "| docs | system | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for n, systems in results.items():
        if not n.isdigit():
            continue
        for name, res in systems.items():
            cells = []
            for c in cols:
                v = res.get(c)
                cells.append("—" if v is None else f"{v:,.1f}" if isinstance(v, float) else str(v))
            lines.append(f"| {int(n):,} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# CPU-time figures: on a shared machine the wall-clock ones wander with the other work
PLOTTED = (("index_cpu_s", "index CPU s (1 worker)"), ("peak_rss_mb", "peak RSS MB (build)"),
           ("index_mb", "index MB"), ("qps_k10_cpu", "queries per CPU s, top-10"),
           ("qps_k10_exhaustive_cpu", "queries per CPU s, top-10 exhaustive"),
           ("qps_k1000_cpu", "queries per CPU s, top-1000"))


def plot(results: dict, path: Path, command: str) -> None:
    """One log-log panel per figure against collection size, a line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(int(n) for n in results if n.isdigit())
    fig, axes = plt.subplots(2, 3, figsize=(12, 7))
    for ax, (key, title) in zip(axes.flat, PLOTTED):
        lines = [("retrievo", key, "retrievo"), ("bm25s", key, "bm25s (numba backend)")]
        if key in ("qps_k10_cpu", "qps_k1000_cpu"):
            lines.append(("bm25s", key.replace("_cpu", "_numpy_backend_cpu"), "bm25s (default numpy backend)"))
        for system, field, label in lines:
            pts = [(n, results[str(n)][system].get(field)) for n in sizes if system in results[str(n)]]
            pts = [(n, v) for n, v in pts if v]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("documents")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(command, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    log(f"plot written to {path}")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", default="100000,300000,1000000", help="comma-separated collection sizes")
    p.add_argument("--json", action="store_true", help="print one JSON object keyed by size, then system")
    p.add_argument("--repeat", type=int, default=3, help="timed samples per throughput figure")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--workdir", default=None, help="where the corpus and indexes go (default: a temp folder)")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--generator", choices=GENERATORS, default="unigram", help="unigram: every word independently "
                   "from the unigram distribution (default); topical: each document draws half its words from one "
                   "real document, half from the unigram distribution")
    p.add_argument("--data", default=str(SHARED), help="the shared data folder")
    p.add_argument("--no-scifact", action="store_true", help="skip the single-core SciFact indexing comparison")
    p.add_argument("--plot", help="write a log-log plot of each figure against size to this PNG")
    p.add_argument("--from-json", help="re-print the table (and --plot) from a saved --json output; runs nothing")
    p.add_argument("--worker", choices=sorted(TASKS), help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--index-dir", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--segment-docs", type=int, default=200_000, help=argparse.SUPPRESS)
    p.add_argument("--no-merge", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        Path(args.result_file).write_text(json.dumps(TASKS[args.worker](args)))
        return
    command = "python bench/bm25_scale.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        print(markdown(results, command))
        if args.plot:
            plot(results, Path(args.plot), command)
        return
    log(f"command: {command}")
    log(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, load {os.getloadavg()}")
    sizes = sorted(int(x) for x in args.docs.split(","))
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    own_tmp = args.workdir is None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="bm25_scale_")
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    try:
        corpus = corpus_file(Path(args.workdir), sizes[-1], args.seed, Path(args.data), args.generator)
        results = {str(n): run_size(n, corpus, args) for n in sizes}
        if not args.no_scifact:
            results["scifact_single_core_indexing"] = spawn("scifact-index", args)
    finally:
        if own_tmp:
            shutil.rmtree(args.workdir, ignore_errors=True)
    log(markdown(results, command))
    if args.plot:
        plot(results, Path(args.plot), command)
    if args.json:
        print(json.dumps(results, indent=1), flush=True)


if __name__ == "__main__":
    main()

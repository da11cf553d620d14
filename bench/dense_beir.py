#!/usr/bin/env python
"""Dense retrieval on one BEIR dataset: encoding speed, exact / HNSW / int8 / binary /
bi-granular search, hybrid BM25 + dense, and faiss ``IndexFlatIP`` as the peer, in one run.

    python bench/dense_beir.py DATA_DIR [--json] [--split test] [--k 100] [--encode-docs 300]
                               [--batch-size 32] [--repeat 3]

The corpus vectors come from the dense stage's cache (``$RETRIEVO_CACHE_DIR``, or beside
the index): encoded once by retrievo's default encoder (all-MiniLM-L6-v2), never per run.

Measured
  encode     documents/s of retrievo's ``Encoder.encode_documents`` (default options: bf16
             where the CPU computes it natively, length-sorted batches) and of plain
             ``SentenceTransformer.encode`` (fp32, same batch size), on the first
             ``--encode-docs`` documents of the corpus (a slice: encoding all of it takes
             minutes); best of ``--encode-rounds`` rounds in which the encoders take
             turns, after a warm-up. ``onnx_int8_docs_per_s`` and
             ``ndcg@10_onnx_int8`` (the full corpus encoded by the ONNX int8 encoder,
             cached like any dense run) only when the encoder offers an ONNX backend.
  search     every method answers the split's queries with their vectors already
             computed (carried in ``Query.meta``, so query encoding is not timed), ``--k``
             results each, through the ``dense`` stage (faiss: ``IndexFlatIP.search`` plus
             the same conversion to rankings). nDCG@10 and R@100 after removing self-hits
             (BEIR convention). ``qps``: whole batch, 1 thread (BLAS, numba and usearch
             limited to it; faiss ``omp_set_num_threads``); ``qps_2t``: 2 threads; best of
             ``--repeat`` samples of >= 0.5 s each.
  ram_mb     resident memory the index needs: a fresh worker process (no torch) warms its
             kernels on a toy index, then measures its RSS (``psutil``, after
             ``malloc_trim``) before opening the vector index and after loading the
             method's structures and answering every query once; the difference is what
             stays resident (memory-mapped pages the searches touched included, the
             kernel's page cache not). RSS rather than USS: the file's pages are also
             mapped by the parent process, and USS would leave such shared pages out.
             The peak (RSS sampled every 5 ms) is printed beside it: it adds the batch's
             working memory (score blocks, candidate heaps), which depends on the
             number of queries answered together, not on the index.
  hybrid     the registered ``hybrid`` stage with its defaults (chosen on SciFact train).
  recall@10_vs_exact   (HNSW) share of the exact top 10 that HNSW returns.

reference  on SciFact and Cranfield (test), the exact row is compared with the published
           sentence-transformers reference of ``../shared/README.md`` (all-MiniLM-L6-v2,
           exact cosine): ``reference`` in the exact row, and ``matches_reference`` when
           nDCG@10 is within 0.003 and R@100 within 0.01 of it. The test suite checks the
           same model on a slice (``tests/test_dense.py``); this is the full-corpus check.

``--json`` prints one object keyed by ``encode``, ``exact``, ``hnsw``, ``int8``,
``binary_rescore``, ``bigranular``, ``hybrid``, ``faiss_flat``; everything else to stderr.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

import numpy as np

from bm25_beir import best_rate  # the same timing rule as the BM25 benchmark (this folder is on sys.path)

METHODS = {
    "exact": "dense(threads={t}) % {k}",
    "hnsw": "dense(search=hnsw, k={k}, threads={t})",
    "int8": "dense(codes=int8, rescore=2, k={k}, threads={t})",
    "binary_rescore": "dense(codes=binary, rescore=10, k={k}, threads={t})",
    "bigranular": "dense(codes=binary, rescore=10, bigranular=true, k={k}, threads={t})",
    "hybrid": "hybrid(threads={t}) % {k}",
}
ORDER = ["exact", "hnsw", "int8", "binary_rescore", "bigranular", "hybrid", "faiss_flat"]


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)




def trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


# ======================================================================================
# RAM worker: a fresh process per method, without torch
# ======================================================================================
def worker(args) -> None:
    import psutil

    from retrievo.index.vectors import VectorIndex
    from retrievo.retrieve.exact import search_blocks
    from retrievo.retrieve.hnsw import search_hnsw
    from retrievo.retrieve.quantized import search_codes

    method, k = args.worker, args.k
    qv = np.load(args.query_vectors)
    # warm every kernel on a toy index, so JIT memory is in the baseline
    rng = np.random.default_rng(0)
    toy_vecs = rng.standard_normal((300, qv.shape[1])).astype(np.float32)
    toy = VectorIndex.build([f"t{i}" for i in range(300)], toy_vecs, model="toy")
    search_blocks(qv[:4], toy.blocks(), 300, None, toy.id_rank, toy.by_rank, 5, 1)
    for kind in ("binary", "int8"):
        search_codes([u.value() for u in toy.ensure_derived(kind)], qv[:4], toy, 5, 2, 1, read="pread")
    search_hnsw([u.value() for u in toy.ensure_derived("hnsw-m16-efc128")], qv[:4], toy, 5, 64, 1)
    if method == "faiss_flat":
        import faiss

        faiss.omp_set_num_threads(1)
    if method == "hybrid":
        from retrievo.data.beir import BeirDataset
        from retrievo.pipeline import fuse_rankings, parse
        from retrievo.types import Rankings

        data = BeirDataset(args.data_dir)
        queries = data.queries(args.split)
    del toy, toy_vecs
    me = psutil.Process()
    stop = threading.Event()
    peak = [0]

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            stop.wait(0.005)

    trim()
    base = me.memory_info().rss
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    vindex = VectorIndex.open(args.vector_index)
    keep: list[object] = [vindex]
    if method == "exact":
        search_blocks(qv, vindex.blocks(), vindex.total_docs, vindex.live, vindex.id_rank, vindex.by_rank, k, 1)
    elif method in ("int8", "binary_rescore", "bigranular"):
        kind = "int8" if method == "int8" else "binary"
        codes = [u.value() for u in vindex.ensure_derived(kind)]
        keep.append(codes)
        search_codes(codes, qv, vindex, k, 2 if method == "int8" else 10, 1,
                     read="pread" if method == "bigranular" else "mmap")
    elif method == "hnsw":
        graphs = [u.value() for u in vindex.ensure_derived("hnsw-m16-efc128")]
        keep.append(graphs)
        search_hnsw(graphs, qv, vindex, k, 64, 1)
    elif method == "faiss_flat":
        import mmap

        flat = faiss.IndexFlatIP(vindex.dim)
        for _, block in vindex.blocks():
            flat.add(np.ascontiguousarray(block))
            if getattr(block, "_mmap", None) is not None:  # faiss keeps its own copy: unmap the pages read
                block._mmap.madvise(mmap.MADV_DONTNEED)
        keep.append(flat)
        flat.search(qv, k)
    elif method == "hybrid":
        from retrievo.index import InvertedIndex

        lex = InvertedIndex.build(data.iter_documents(), workers=1)
        keep.append(lex)
        bm25 = parse(f"bm25(threads=1) % {args.depth}", {"index": lex})(queries)
        d, s, c = search_blocks(qv, vindex.blocks(), vindex.total_docs, vindex.live, vindex.id_rank,
                                vindex.by_rank, args.depth, 1)
        dense = Rankings.from_lists(queries, [(vindex.doc_ids[d[i, :c[i]]], s[i, :c[i]]) for i in range(len(c))])
        from retrievo.retrieve import hybrid as hy

        fuse_rankings([bm25, dense], hy.METHOD, k=hy.RRF_K, weights=[hy.WEIGHT, 1 - hy.WEIGHT],
                      normalize="minmax" if hy.METHOD == "sum" else None)
    trim()
    stop.set()
    sampler.join()
    after = me.memory_info().rss
    print(json.dumps({"ram_mb": (after - base) / 2**20, "peak_mb": (max(peak[0], after) - base) / 2**20}))


def measure_ram(method: str, args, vector_index: str, qv_path: str) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), args.data_dir, "--worker", method, "--vector-index",
           vector_index, "--query-vectors", qv_path, "--k", str(args.k), "--split", args.split,
           "--depth", str(args.depth)]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        log(out.stderr[-2000:])
        raise SystemExit(f"RAM worker for {method} failed")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ======================================================================================
# main run
# ======================================================================================
def encode_speed(texts, batch_size: int, folder, rounds: int) -> dict:
    """Documents/s of each encoder on ``texts``: the best of ``rounds`` rounds, the
    encoders taking turns within each round, so a burst of load from elsewhere on a
    shared machine hits all of them rather than one."""
    from sentence_transformers import SentenceTransformer

    from retrievo.models.encoder import load_encoder

    enc = load_encoder(None, batch_size=batch_size)
    st = SentenceTransformer(str(folder), device="cpu")
    systems = {"retrievo_docs_per_s": lambda: enc.encode_documents(texts, progress=False),
               "st_docs_per_s": lambda: st.encode(texts, batch_size=batch_size)}
    if onnx_offered():
        try:
            onnx = load_encoder(None, batch_size=batch_size, backend="onnx", quantize="int8")
            systems["onnx_int8_docs_per_s"] = lambda: onnx.encode_documents(texts, progress=False)
        except Exception as exc:  # noqa: BLE001 - report and go on without the ONNX keys
            log(f"ONNX backend offered but failed to load ({exc}); onnx keys omitted")
    enc.encode_documents(texts[:batch_size], progress=False)  # warm-up
    st.encode(texts[:batch_size], batch_size=batch_size)
    if "onnx_int8_docs_per_s" in systems:
        onnx.encode_documents(texts[:batch_size], progress=False)
    best = dict.fromkeys(systems, float("inf"))
    for r in range(rounds):
        for name, fn in systems.items():
            t0 = time.perf_counter()
            fn()
            took = time.perf_counter() - t0
            best[name] = min(best[name], took)
            log(f"encode round {r + 1} {name}: {len(texts) / took:.1f} docs/s")
    return {name: len(texts) / t for name, t in best.items()}


def onnx_offered() -> bool:
    """Whether the encoder has an ONNX Runtime backend (and onnxruntime is installed)."""
    try:
        from retrievo.models.onnx import BACKENDS, require_onnxruntime

        require_onnxruntime()
    except Exception:  # noqa: BLE001 - absent module, missing extra: no ONNX path to measure
        return False
    return "onnx" in BACKENDS


def run(args) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import faiss

    from retrievo.data.beir import BeirDataset
    from retrievo.evaluate.metrics import evaluate
    from retrievo.index import InvertedIndex
    from retrievo.pipeline import parse
    from retrievo.retrieve.exact import blas_threads
    from retrievo.types import Queries, Rankings

    data = BeirDataset(args.data_dir)
    queries, qrels = data.queries(args.split), data.qrels(args.split)
    docs = list(data.iter_documents())
    lex = InvertedIndex.build(docs)
    exact = parse("dense", {"index": lex})
    vindex = exact._vectors()
    encoder = exact.encoder()
    log(f"vector index: {vindex.path} ({len(vindex)} docs x {vindex.dim}, {encoder.identity()})")
    qv = exact.query_vectors(queries)
    carried = Queries(queries.ids, queries.texts,
                      [{"vector": v, "vector_model": encoder.identity()} for v in qv])
    n_q = len(queries)

    def metrics(run):
        m = evaluate(run.drop_self_hits(), qrels, ["nDCG@10", "R@100"])
        return {"ndcg@10": round(m["nDCG@10"], 4), "r@100": round(m["R@100"], 4)}

    results: dict[str, dict] = {}
    texts = [d.contents for d in docs[:args.encode_docs]]
    results["encode"] = encode_speed(texts, args.batch_size, encoder.folder, args.encode_rounds)
    if "onnx_int8_docs_per_s" in results["encode"]:  # full-corpus quality (encoded once, then cached)
        onnx_stage = parse(f"dense(model={args.model + '?backend=onnx&quantize=int8'!r}) % 100", {"index": lex})
        results["encode"]["ndcg@10_onnx_int8"] = metrics(onnx_stage(queries))["ndcg@10"]
        log(f"ONNX int8 encoder, full corpus: nDCG@10 {results['encode']['ndcg@10_onnx_int8']}")

    runs = {}
    for name, template in METHODS.items():
        row = {}
        for threads, key in ((1, "qps"), (2, "qps_2t")):
            stage = parse(template.format(t=threads, k=args.k), {"index": lex})
            with blas_threads(threads):
                rate, out = best_rate(lambda s=stage: s(carried), n_q, args.repeat)
            row[key] = round(rate, 1)
            runs.setdefault(name, out)
            log(f"{name} {threads}t: {rate:.1f} q/s ({stage})")
        results[name] = {**metrics(runs[name]), **row}

    flat = faiss.IndexFlatIP(vindex.dim)
    for _, block in vindex.blocks():
        flat.add(np.ascontiguousarray(block))
    ids = vindex.doc_ids

    def faiss_search():
        scores, numbers = flat.search(qv, args.k)
        return Rankings.from_lists(queries, [(ids[numbers[i]], scores[i]) for i in range(n_q)])

    row = {}
    for threads, key in ((1, "qps"), (2, "qps_2t")):
        faiss.omp_set_num_threads(threads)
        rate, out = best_rate(faiss_search, n_q, args.repeat)
        row[key] = round(rate, 1)
        runs.setdefault("faiss_flat", out)
        log(f"faiss_flat {threads}t: {rate:.1f} q/s")
    results["faiss_flat"] = {**metrics(runs["faiss_flat"]), **row}

    ex, hn = runs["exact"], runs["hnsw"]
    results["hnsw"]["recall@10_vs_exact"] = round(float(np.mean(
        [len(set(a.doc_ids[:10]) & set(b.doc_ids[:10])) / max(1, min(10, len(b))) for a, b in zip(hn, ex)])), 4)

    with tempfile.TemporaryDirectory() as tmp:
        qv_path = os.path.join(tmp, "queries.npy")
        np.save(qv_path, qv)
        for name in ORDER:
            ram = measure_ram(name, args, str(vindex.path), qv_path)
            results[name]["ram_mb"] = round(ram["ram_mb"], 2)
            results[name]["_peak_mb"] = round(ram["peak_mb"], 2)
            log(f"{name} RAM: {ram['ram_mb']:.2f} MB resident after the searches, peak {ram['peak_mb']:.2f} MB")
    check_reference(results["exact"], args.data_dir, args.split)
    results["_float_file_mb"] = round(sum(p.vectors.nbytes for p in vindex.parts) / 2**20, 2)
    results["_specs"] = {n: t.format(t=1, k=args.k) for n, t in METHODS.items()}
    results["_hybrid_spec"] = parse("hybrid", {"index": lex}).spec(resources=False)
    return results


def machine() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores, load {os.getloadavg()[0]:.2f}, Python {platform.python_version()}"


# sentence-transformers all-MiniLM-L6-v2 + exact cosine, BEIR convention (../shared/README.md)
REFERENCE = {("scifact", "test"): {"ndcg@10": 0.6451, "r@100": 0.925},
             ("cranfield", "test"): {"ndcg@10": 0.3817, "r@100": 0.7737}}


def check_reference(exact: dict, data_dir: str, split: str) -> None:
    """Add the published reference of this dataset (if any) and whether ``exact`` meets it."""
    ref = REFERENCE.get((os.path.basename(os.path.normpath(data_dir)).lower(), split))
    if ref is not None:
        exact["reference"] = ref
        exact["matches_reference"] = bool(abs(exact["ndcg@10"] - ref["ndcg@10"]) <= 0.003
                                          and abs(exact["r@100"] - ref["r@100"]) <= 0.01)


def markdown(res: dict, args, command: str, info: str) -> str:
    enc = res["encode"]
    lines = [f"Dense retrieval on `{args.data_dir}` ({args.split}), {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"Machine: {info}", "",
             f"Encoding, first {args.encode_docs} documents (a slice), batch {args.batch_size}: retrievo "
             f"{enc['retrievo_docs_per_s']:.1f} docs/s, sentence-transformers fp32 {enc['st_docs_per_s']:.1f} docs/s "
             f"({enc['retrievo_docs_per_s'] / enc['st_docs_per_s']:.2f}x)"
             + (f"; ONNX Runtime int8 {enc['onnx_int8_docs_per_s']:.1f} docs/s "
                f"({enc['onnx_int8_docs_per_s'] / enc['st_docs_per_s']:.2f}x), full-corpus nDCG@10 with it "
                f"{enc['ndcg@10_onnx_int8']:.4f} (exact fp32 row below)"
                if "onnx_int8_docs_per_s" in enc else "; no ONNX path in the encoder (onnx keys omitted)"),
             "", f"Search, top {args.k}, query vectors precomputed; float vectors {res['_float_file_mb']} MB on disk",
             "", "| method | spec | nDCG@10 | R@100 | q/s 1t | q/s 2t | RAM MB (resident) | peak MB |",
             "|---|---|---|---|---|---|---|---|"]
    specs = {**res["_specs"], "hybrid": res["_hybrid_spec"], "faiss_flat": "faiss IndexFlatIP"}
    for name in ORDER:
        r = res[name]
        extra = f" (recall@10 vs exact {r['recall@10_vs_exact']})" if name == "hnsw" else ""
        lines.append(f"| {name}{extra} | `{specs[name]}` | {r['ndcg@10']:.4f} | {r['r@100']:.4f} | {r['qps']:.0f} | "
                     f"{r['qps_2t']:.0f} | {r['ram_mb']:.2f} | {r['_peak_mb']:.2f} |")
    ex = res["exact"]
    if "reference" in ex:
        lines += ["", f"Reference (sentence-transformers, ../shared/README.md): nDCG@10 {ex['reference']['ndcg@10']}, "
                  f"R@100 {ex['reference']['r@100']}; exact {'matches' if ex['matches_reference'] else 'DIFFERS'}"]
    lines += ["", f"Command: `{command}`"]
    return "\n".join(lines)


def public(res: dict) -> dict:
    out = {}
    for name in ["encode", *ORDER]:
        out[name] = {k: v for k, v in res[name].items() if not k.startswith("_")}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data_dir")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--split", default="test")
    p.add_argument("--k", type=int, default=100, help="results per query (default 100)")
    p.add_argument("--encode-docs", type=int, default=300, help="documents in the encoding slice (default 300)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--encode-rounds", type=int, default=3, help="interleaved encoding rounds, best kept (default 3)")
    p.add_argument("--model", default="all-MiniLM-L6-v2", help="model name of the ONNX int8 quality run")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--depth", type=int, default=1000, help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--vector-index", help=argparse.SUPPRESS)
    p.add_argument("--query-vectors", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return
    command = " ".join(shlex.quote(a) for a in [f"RETRIEVO_CACHE_DIR={os.environ.get('RETRIEVO_CACHE_DIR', '')}",
                                                "python", "bench/dense_beir.py", *sys.argv[1:]])
    log(f"command: {command}")
    info = machine()
    res = run(args)
    if args.json:
        print(json.dumps(public(res), indent=1))
        log(f"command: {command}")
    else:
        print(markdown(res, args, command, info))


if __name__ == "__main__":
    main()

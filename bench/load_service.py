#!/usr/bin/env python
"""Hold N concurrent clients against a running ``retrievo serve`` for S seconds.

    python bench/load_service.py --url http://127.0.0.1:8080 [--key KEY] [--clients 16] [--seconds 60]
                                 [--queries DATA_OR_FILE] [--pipeline NAME] [--k 10]
                                 [--index INDEX] [--json]

Each client sends ``POST /v1/search`` requests back to back (the next as soon as the last
is answered), cycling through the queries (a BEIR folder's ``queries.jsonl``, a JSONL file
of ``{"text": ...}``, or one query per line; a built-in list otherwise) from its own
offset. Reported: requests per second over the whole run, p50 / p99 latency of the
successful requests, and errors (non-200 answers, timeouts, refused connections).

With ``--index`` (the folder the server serves) the same pipeline also runs in this
process, one query at a time on one thread, for as long as the HTTP run lasted (at most
20 s): ``inprocess_qps`` is the throughput without HTTP, JSON and the server's thread
pool, the baseline the service's overhead is measured against.

With ``--writers W`` (needs a write ``--key``), W more clients add one new document per
request (ids ``load-<pid>-<n>``, left in the index) during the same run: ``write_docs_per_s``
and ``write_p50_ms`` / ``write_p99_ms`` show what acknowledged (durable) writes cost and
how group commit batches them while searches run.

Bounded on purpose: loopback URLs only, at most 256 clients and 600 seconds.
``--json`` prints ``rps``, ``p50_ms``, ``p99_ms``, ``errors`` and ``inprocess_qps`` (null
without ``--index``), plus the settings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

from retrievo.serving import is_loopback

FALLBACK_QUERIES = [
    "protein folding misfolded aggregates", "vitamin D deficiency risk", "antibiotic resistance bacteria",
    "stem cell differentiation", "tumor suppressor gene mutation", "insulin resistance obesity",
    "immune response to viral infection", "DNA methylation aging", "neuronal plasticity learning",
    "cardiovascular disease statins", "malaria transmission mosquitoes", "gut microbiome diet",
    "cancer immunotherapy checkpoint", "smoking lung function", "depression treatment trials",
]


def load_queries(source: str | None) -> list[str]:
    if not source:
        return list(FALLBACK_QUERIES)
    path = Path(source)
    if path.is_dir():
        path = path / "queries.jsonl"
    texts = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        if path.suffix == ".jsonl":
            record = json.loads(line)
            texts.append(str(record.get("text") or record.get("query") or ""))
        else:
            texts.append(line)
    return [t for t in texts if t.strip()][:5000] or list(FALLBACK_QUERIES)


async def _client(http, url: str, queries: list[str], offset: int, body: dict, deadline: float,
                  latencies: list[float], errors: list[str]) -> None:
    i = offset
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        try:
            r = await http.post(url + "/v1/search", json={**body, "query": queries[i % len(queries)]})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors.append(f"{r.status_code}: {r.text[:120]}")
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none stops the run
            errors.append(f"{type(exc).__name__}: {exc}")
        i += 1


async def _writer(http, url: str, name: str, deadline: float, latencies: list[float], errors: list[str]) -> None:
    n = 0
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        try:
            r = await http.post(url + "/v1/documents", json={"documents": [
                {"doc_id": f"{name}-{n}", "text": f"load test document {n} written while searches run"}]})
            if r.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors.append(f"{r.status_code}: {r.text[:120]}")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{type(exc).__name__}: {exc}")
        n += 1


async def run_load(url: str, key: str | None, clients: int, seconds: float, queries: list[str], body: dict,
                   writers: int = 0):
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    latencies: list[float] = []
    errors: list[str] = []
    write_latencies: list[float] = []
    write_errors: list[str] = []
    limits = httpx.Limits(max_connections=clients + writers, max_keepalive_connections=clients + writers)
    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as http:
        r = await http.post(url + "/v1/search", json={**body, "query": queries[0]})  # warm (JIT, caches)
        r.raise_for_status()
        start = time.perf_counter()
        deadline = start + seconds
        await asyncio.gather(*[_client(http, url, queries, c * 7919, body, deadline, latencies, errors)
                               for c in range(clients)],
                             *[_writer(http, url, f"load-{os.getpid()}-{w}", deadline, write_latencies, write_errors)
                               for w in range(writers)])
        elapsed = time.perf_counter() - start
    return latencies, errors, elapsed, write_latencies, write_errors


def inprocess_qps(index_path: str, spec: str, k: int, queries: list[str], budget: float) -> float:
    from retrievo.index import open_index
    from retrievo.pipeline import parse

    stage = parse(spec, {"index": open_index(index_path)}) % k
    stage.search(queries[0])  # warm
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < budget:
        stage.search(queries[done % len(queries)])
        done += 1
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--key")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--queries")
    ap.add_argument("--pipeline", help="pipeline name or spec the server allows (default: its first)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--index", help="the served index folder: also measure in-process throughput")
    ap.add_argument("--writers", type=int, default=0, help="clients adding documents meanwhile (write key)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not is_loopback(urlparse(args.url).hostname or ""):
        ap.error("only loopback URLs (127.0.0.1, ::1, localhost): this tool is not for loading other machines")
    if not 1 <= args.clients <= 256 or not 0 < args.seconds <= 600 or not 0 <= args.writers <= 64:
        ap.error("--clients must be in [1, 256], --writers in [0, 64] and --seconds in (0, 600]")
    url = args.url.rstrip("/")
    queries = load_queries(args.queries)
    body = {"k": args.k, "snippets": False, **({"pipeline": args.pipeline} if args.pipeline else {})}
    latencies, errors, elapsed, wlat, werr = asyncio.run(run_load(url, args.key, args.clients, args.seconds, queries,
                                                                  body, args.writers))
    import numpy as np

    lat = np.array(latencies) * 1e3
    result = {
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
        "errors": len(errors),
        "inprocess_qps": None,
        "requests": len(latencies) + len(errors), "clients": args.clients, "seconds": round(elapsed, 2),
        "queries": len(queries), "k": args.k, "pipeline": args.pipeline,
        "error_samples": sorted(set(errors + werr))[:5],
    }
    if args.writers:
        wl = np.array(wlat) * 1e3
        result.update(writers=args.writers, write_docs_per_s=len(wlat) / elapsed, write_errors=len(werr),
                      write_p50_ms=float(np.percentile(wl, 50)) if len(wl) else None,
                      write_p99_ms=float(np.percentile(wl, 99)) if len(wl) else None)
    if args.index:
        import httpx

        spec = args.pipeline
        if spec is None or spec.isidentifier() or "(" not in spec and ">>" not in spec and "%" not in spec:
            info = httpx.get(url + "/v1/collections", headers={"Authorization": f"Bearer {args.key}"}
                             if args.key else {}).json()
            named = {p["name"]: p["spec"] for p in info[0]["pipelines"]}
            spec = named[spec] if spec in named else next(iter(named.values()))
        result["inprocess_qps"] = inprocess_qps(args.index, spec, args.k, queries, min(elapsed, 20.0))
        result["inprocess_spec"] = spec
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['requests']} requests in {elapsed:.1f} s from {args.clients} clients: "
              f"{result['rps']:.1f} req/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
              f"{result['errors']} errors")
        if args.writers:
            print(f"writes from {args.writers} clients: {result['write_docs_per_s']:.1f} documents/s acknowledged, "
                  f"p50 {result['write_p50_ms']:.1f} ms, p99 {result['write_p99_ms']:.1f} ms, "
                  f"{result['write_errors']} errors")
        if result["inprocess_qps"] is not None:
            print(f"in-process ({result['inprocess_spec']}, one thread): {result['inprocess_qps']:.1f} queries/s")
        for e in result["error_samples"]:
            print("  error:", e)
    return 0 if not errors and not werr else 1


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Kill ``retrievo serve`` with SIGKILL while clients write, restart it, and check that
every acknowledged write survived and the index still opens.

    python bench/fault_service.py [--cycles 20] [--writers 4] [--data BEIR_DIR] [--docs 2000]
                                  [--seed 0] [--json]

Each cycle starts the server (``python -m retrievo serve INDEX --port 0``) on the same index
folder, runs ``--writers`` clients that add small batches of new documents and delete some
of the documents they added before, and SIGKILLs the server at a random moment between
0.3 and 2 s into the writes (seeded: ``--seed``). Then, with the server dead:

* the index must open with every file checked against its recorded sha256
  (``open_index(path, verify=True)``); a failure counts as ``corrupt``;
* every acknowledged add must be present and every acknowledged delete absent; each miss
  counts as ``lost``. Writes that were in flight when the server died (no answer) may land
  or not; they are not counted either way, and a document whose deletion was in flight is
  not checked.

The next cycle restarts the server on the folder, which is itself a check that it opens.
The index is built in a temporary folder (from the first ``--docs`` documents of a BEIR
folder, or synthetic ones) and removed at the end. Bounded: at most 200 cycles, loopback
only. ``--json`` prints ``cycles``, ``acknowledged``, ``lost``, ``corrupt`` and details.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def build_index(folder: Path, data: str | None, docs: int) -> Path:
    from retrievo.index import InvertedIndex
    from retrievo.types import Document

    path = folder / "index"
    if data:
        from retrievo.data.beir import BeirDataset

        def first():
            for i, d in enumerate(BeirDataset(data).iter_documents()):
                if i >= docs:
                    return
                yield d
        InvertedIndex.build(first(), path)
    else:
        words = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega".split()
        InvertedIndex.build((Document(f"base-{i}", " ".join(words[(i * j) % len(words)] for j in range(1, 12)))
                             for i in range(docs)), path)
    return path


def start_server(index: Path, key_file: Path, log) -> tuple[subprocess.Popen, str]:
    cmd = [sys.executable, "-m", "retrievo", "serve", str(index), "--port", "0", "--keys", str(key_file)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ})
    line = proc.stdout.readline()
    m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"the server did not start: {line!r} (see its log)")
    return proc, m.group(1)


class Ledger:
    """What the clients were told: acknowledged adds and deletes, and ids in doubt."""

    def __init__(self):
        self.lock = threading.Lock()
        self.present: set[str] = set()
        self.absent: set[str] = set()
        self.acknowledged = 0

    def added(self, ids):
        with self.lock:
            self.present.update(ids)
            self.acknowledged += len(ids)

    def deleted(self, doc_id):
        with self.lock:
            self.present.discard(doc_id)
            self.absent.add(doc_id)
            self.acknowledged += 1

    def doubt(self, doc_id):
        with self.lock:
            self.present.discard(doc_id)

    def pick(self, rng, prefix):
        with self.lock:
            mine = [d for d in self.present if d.startswith(prefix)]
        return rng.choice(mine) if mine else None


def writer(url: str, key: str, name: str, rng: random.Random, ledger: Ledger, stop: threading.Event) -> None:
    import httpx

    n = 0
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        while not stop.is_set():
            try:
                victim = ledger.pick(rng, name) if rng.random() < 0.25 else None
                if victim is not None:
                    ledger.doubt(victim)  # in flight: could land or not until answered
                    r = c.delete(f"/v1/documents/{victim}")
                    if r.status_code == 200:
                        ledger.deleted(victim)
                    continue
                ids = [f"{name}-{n + i}" for i in range(rng.randint(1, 5))]
                n += len(ids)
                r = c.post("/v1/documents", json={"documents": [
                    {"doc_id": d, "text": f"fault test document {d} omega sigma"} for d in ids]})
                if r.status_code == 200:
                    ledger.added(ids)
            except httpx.HTTPError:
                return  # the server died: what was in flight stays in doubt


def check(index: Path, ledger: Ledger) -> tuple[int, str | None]:
    """Lost acknowledged writes, and the error if the index does not open verified."""
    from retrievo.index import open_index

    try:
        idx = open_index(index, verify=True)
    except Exception as exc:  # noqa: BLE001 - any failure to open is what we count
        return 0, f"{type(exc).__name__}: {exc}"
    with ledger.lock:
        lost = sum(1 for d in ledger.present if d not in idx) + sum(1 for d in ledger.absent if d in idx)
    return lost, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cycles", type=int, default=20)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--data", help="BEIR folder whose first --docs documents seed the index")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if not 1 <= args.cycles <= 200 or not 1 <= args.writers <= 32:
        ap.error("--cycles must be in [1, 200] and --writers in [1, 32]")
    from retrievo.server.keys import KeyStore

    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="retrievo-fault-"))
    result = {"cycles": 0, "acknowledged": 0, "lost": 0, "corrupt": 0, "errors": [], "per_cycle": []}
    try:
        index = build_index(folder, args.data, args.docs)
        key_file = folder / "keys.json"
        key = KeyStore(key_file).create("write")
        ledger = Ledger()
        with open(folder / "server.log", "w") as log:
            for cycle in range(args.cycles):
                proc, url = start_server(index, key_file, log)
                stop = threading.Event()
                threads = [threading.Thread(target=writer, args=(url, key, f"c{cycle}w{w}",
                                                                  random.Random(rng.random()), ledger, stop))
                           for w in range(args.writers)]
                try:
                    for t in threads:
                        t.start()
                    time.sleep(rng.uniform(0.3, 2.0))
                finally:
                    proc.kill()  # SIGKILL: no shutdown hook runs (and no server outlives this tool)
                    proc.wait()
                    stop.set()
                for t in threads:
                    t.join(60)
                lost, error = check(index, ledger)
                result["cycles"] += 1
                result["lost"] += lost
                result["per_cycle"].append({"acknowledged": ledger.acknowledged, "lost": lost,
                                            "documents": len(ledger.present)})
                if error:
                    result["corrupt"] += 1
                    result["errors"].append(error)
                    break
                if not args.json:
                    print(f"cycle {cycle + 1}: {ledger.acknowledged} acknowledged so far, {lost} lost", flush=True)
        result["acknowledged"] = ledger.acknowledged
        if not result["corrupt"]:  # the server comes up on the final state too
            with open(folder / "server.log", "a") as log:
                proc, url = start_server(index, key_file, log)
                import httpx

                try:
                    ok = httpx.get(url + "/health", timeout=30).status_code == 200
                except httpx.HTTPError:
                    ok = False
                finally:
                    proc.terminate()
                    proc.wait(30)
                if not ok:
                    result["corrupt"] += 1
                    result["errors"].append("the server did not answer /health after the last restart")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['cycles']} cycles, {result['acknowledged']} acknowledged writes, {result['lost']} lost, "
              f"{result['corrupt']} unreadable indexes")
    return 0 if not result["lost"] and not result["corrupt"] else 1


if __name__ == "__main__":
    sys.exit(main())

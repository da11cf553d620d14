"""Reference BM25 runs from real Lucene (``tests/reference/LuceneBM25.java``).

Lucene 8.7 configured as Anserini indexes BEIR "flat" reproduces Pyserini's published
BEIR BM25 numbers exactly (SciFact nDCG@10 0.6789), so it is the oracle for
:mod:`retrievo.retrieve.bm25`. Jars and skipping follow :mod:`lucene_ref`.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import lucene_ref

SOURCE = Path(__file__).resolve().parent / "reference" / "LuceneBM25.java"


def require() -> None:
    lucene_ref.require()


@lru_cache(maxsize=None)
def _classpath() -> str:
    jars = lucene_ref.find_jars()
    h = hashlib.sha256(SOURCE.read_bytes() + ":".join(jars).encode()).hexdigest()[:16]
    out = Path(tempfile.gettempdir()) / f"retrievo-lucene-bm25-{h}"
    if not (out / "LuceneBM25.class").is_file():
        tmp = Path(tempfile.mkdtemp(prefix="retrievo-lucene-bm25-"))
        subprocess.run(["javac", "-nowarn", "-encoding", "UTF-8", "-cp", ":".join(jars), "-d", str(tmp), str(SOURCE)],
                       check=True, capture_output=True)
        try:
            os.replace(tmp, out)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
    return ":".join([*jars, str(out)])


def _b64(text: str) -> str:
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def lucene_run(docs, queries, k1: float = 0.9, b: float = 0.4, k: int = 1000) -> dict[str, list[tuple[str, float]]]:
    """``{qid: [(doc_id, score), ...]}`` from Lucene for ``(id, contents)`` docs and ``(qid, text)`` queries."""
    lines = [f"D\t{d}\t{_b64(c)}" for d, c in docs] + [f"Q\t{q}\t{_b64(t)}" for q, t in queries]
    proc = subprocess.run(["java", "-cp", _classpath(), "LuceneBM25", str(k1), str(b), str(k)],
                          input="\n".join(lines).encode("utf-8"), capture_output=True, check=True)
    run: dict[str, list[tuple[str, float]]] = {}
    for line in proc.stdout.decode("utf-8").splitlines():
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, []).append((doc, float(score)))
    return run

"""Run the real Lucene analyzers as a reference for ``retrievo.text``.

The Java side is ``tests/reference/LuceneAnalyze.java``.  It is compiled once
with ``javac`` into a cache directory (keyed by a hash of the source and the
jars) and then run with one JVM per call: every text of a batch goes through a
single process, one JSON string literal per input line, one JSON array per
output line.

Jars: ``RETRIEVO_LUCENE_JARS`` (colon-separated) overrides the default
``/usr/share/java/lucene-core-8.7.0.jar:/usr/share/java/lucene-analyzers-common-8.7.0.jar``;
when those are absent any ``lucene-core-*.jar`` / ``lucene-analyzers-common-*.jar``
in ``/usr/share/java`` is used.

When java, javac or the jars are missing, :func:`require` skips the calling
test with the reason, unless ``RETRIEVO_REQUIRE_LUCENE=1`` is set, in which
case it fails.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Optional

SOURCE = Path(__file__).resolve().parent / "reference" / "LuceneAnalyze.java"
DEFAULT_JARS = (
    "/usr/share/java/lucene-core-8.7.0.jar",
    "/usr/share/java/lucene-analyzers-common-8.7.0.jar",
)
JAR_DIR = "/usr/share/java"


def find_jars() -> Optional[list[str]]:
    """Class path entries for lucene-core and lucene-analyzers-common, or None."""
    env = os.environ.get("RETRIEVO_LUCENE_JARS")
    if env:
        jars = [j for j in env.split(":") if j]
        return jars if jars and all(os.path.isfile(j) for j in jars) else None
    if all(os.path.isfile(j) for j in DEFAULT_JARS):
        return list(DEFAULT_JARS)
    core = sorted(glob.glob(os.path.join(JAR_DIR, "lucene-core-*.jar")))
    common = sorted(glob.glob(os.path.join(JAR_DIR, "lucene-analyzers-common-*.jar")))
    if core and common:
        return [core[-1], common[-1]]
    return None


def unavailable_reason() -> Optional[str]:
    """Why the Lucene reference cannot run here, or None when it can."""
    for tool in ("java", "javac"):
        if shutil.which(tool) is None:
            return f"{tool} not found on PATH"
    if find_jars() is None:
        env = os.environ.get("RETRIEVO_LUCENE_JARS")
        where = f"RETRIEVO_LUCENE_JARS={env!r}" if env else f"{':'.join(DEFAULT_JARS)} or {JAR_DIR}"
        return f"Lucene jars (lucene-core, lucene-analyzers-common) not found in {where}"
    if not SOURCE.is_file():
        return f"{SOURCE} is missing"
    return None


def required() -> bool:
    return os.environ.get("RETRIEVO_REQUIRE_LUCENE", "") not in ("", "0")


def require() -> None:
    """Skip (or, with RETRIEVO_REQUIRE_LUCENE=1, fail) when Lucene cannot run."""
    import pytest

    reason = unavailable_reason()
    if reason is None:
        try:
            _compiled()
        except Exception as exc:  # compile error: report it the same way
            reason = f"could not compile {SOURCE.name}: {exc}"
    if reason is not None:
        if required():
            pytest.fail(f"Lucene reference required (RETRIEVO_REQUIRE_LUCENE=1) but unavailable: {reason}")
        pytest.skip(f"Lucene reference unavailable: {reason}")


@lru_cache(maxsize=None)
def _compiled() -> tuple[str, ...]:
    """Compile LuceneAnalyze.java (cached on disk); return the java class path."""
    jars = find_jars()
    if jars is None:
        raise RuntimeError(unavailable_reason() or "jars not found")
    h = hashlib.sha256(SOURCE.read_bytes())
    for j in jars:
        st = os.stat(j)
        h.update(f"{j}:{st.st_size}:{st.st_mtime_ns}".encode())
    out = Path(tempfile.gettempdir()) / f"retrievo-lucene-ref-{h.hexdigest()[:16]}"
    if not (out / "LuceneAnalyze.class").is_file():
        tmp = Path(tempfile.mkdtemp(prefix="retrievo-lucene-ref-"))
        subprocess.run(
            ["javac", "-nowarn", "-encoding", "UTF-8", "-cp", ":".join(jars), "-d", str(tmp), str(SOURCE)],
            check=True,
            capture_output=True,
        )
        try:
            os.replace(tmp, out)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return tuple(jars) + (str(out),)


def run(mode: str, texts: Iterable[str], *args: str) -> list[Any]:
    """Run LuceneAnalyze in ``mode`` over ``texts``; one decoded JSON value per text."""
    cp = ":".join(_compiled())
    payload = "".join(json.dumps(t, ensure_ascii=True) + "\n" for t in texts).encode("ascii")
    proc = subprocess.run(
        ["java", "-Xss8m", "-cp", cp, "LuceneAnalyze", mode, *args],
        input=payload,
        capture_output=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"LuceneAnalyze {mode} failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    return [json.loads(line) for line in proc.stdout.decode("ascii").splitlines()]


def english(texts: Iterable[str]) -> list[list[str]]:
    """EnglishAnalyzer terms per text."""
    return run("english", texts)


def english_offsets(texts: Iterable[str]) -> list[list[tuple[str, int, int]]]:
    """EnglishAnalyzer (term, start, end) per text; offsets in UTF-16 code units."""
    return [[tuple(t) for t in row] for row in run("english-offsets", texts)]


def standard(texts: Iterable[str]) -> list[list[str]]:
    """StandardAnalyzer terms per text."""
    return run("standard", texts)


def tokens(texts: Iterable[str], max_token_length: Optional[int] = None) -> list[list[tuple[str, int, int, str]]]:
    """StandardTokenizer (text, start, end, type) per text; UTF-16 offsets."""
    extra = () if max_token_length is None else (str(max_token_length),)
    return [[tuple(t) for t in row] for row in run("tokens", texts, *extra)]


def porter(words: Iterable[str]) -> list[str]:
    """Lucene PorterStemFilter applied to each word as a single token."""
    return [row[0] if row else "" for row in run("porter", words)]


def tables() -> dict:
    """Character-class sets of StandardTokenizerImpl and Java's lower-case map."""
    return _tables()


@lru_cache(maxsize=None)
def _tables() -> dict:
    cp = ":".join(_compiled())
    proc = subprocess.run(["java", "-cp", cp, "LuceneAnalyze", "tables"], capture_output=True, check=True)
    return json.loads(proc.stdout.decode("ascii"))


def utf16_to_cp(text: str, offset: int) -> int:
    """Convert a UTF-16 offset into ``text`` to a Python (code point) index."""
    if text.isascii():
        return offset
    units = 0
    for i, ch in enumerate(text):
        if units >= offset:
            return i
        units += 2 if ord(ch) > 0xFFFF else 1
    return len(text)


# ---------------------------------------------------------------------------
# Source generation for retrievo/text/tokenizer.py


def ranges_to_source(ranges: list[list[int]]) -> str:
    """Compact hex form used in tokenizer.py: ``"41-5A 61-7A AA ..."``."""
    parts = []
    for lo, hi in ranges:
        parts.append(f"{lo:X}" if lo == hi else f"{lo:X}-{hi:X}")
    return " ".join(parts)


def lower_to_source(pairs: list[list[int]]) -> str:
    """Java's Character.toLowerCase exceptions as runs ``start:count:step:delta``."""
    runs: list[list[int]] = []  # [start, count, step, delta]
    for c, lower in pairs:
        delta = lower - c
        if runs:
            start, count, step, d = runs[-1]
            last = start + (count - 1) * step
            if d == delta and ((count == 1 and c - last in (1, 2)) or (count > 1 and c - last == step)):
                if count == 1:
                    runs[-1][2] = c - last
                runs[-1][1] += 1
                continue
        runs.append([c, 1, 1, delta])
    return " ".join(f"{s:X}:{n}:{st}:{d}" for s, n, st, d in runs)


def _wrap(src: str, width: int = 96) -> list[str]:
    """Split a space-separated string into chunks of at most ``width`` chars."""
    chunks, cur = [], ""
    for part in src.split(" "):
        if cur and len(cur) + 1 + len(part) > width:
            chunks.append(cur)
            cur = part
        else:
            cur = f"{cur} {part}" if cur else part
    chunks.append(cur)
    return chunks


def tables_source(t: Optional[dict] = None) -> str:
    """The generated block of tokenizer.py (between the GENERATED markers)."""
    t = t if t is not None else _tables()
    lines = [f"# Generated from Lucene {t['lucene_version']} (StandardTokenizerImpl, Unicode 9.0 word-break",
             f"# properties) and Java {t['java_version']} Character.toLowerCase by tests/lucene_ref.py.",
             "_SETS = {"]
    for name, ranges in t["sets"].items():
        chunks = _wrap(ranges_to_source(ranges))
        if len(chunks) == 1:
            lines.append(f"    {name!r}: {chunks[0]!r},")
        else:
            lines.append(f"    {name!r}: (")
            for i, c in enumerate(chunks):
                lines.append(f"        {(c + (' ' if i < len(chunks) - 1 else ''))!r}")
            lines.append("    ),")
    lines.append("}")
    chunks = _wrap(lower_to_source(t["lower"]))
    lines.append("_LOWER_RUNS = (")
    for i, c in enumerate(chunks):
        lines.append(f"    {(c + (' ' if i < len(chunks) - 1 else ''))!r}")
    lines.append(")")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover - developer helper
    import sys

    if len(sys.argv) > 1 and sys.argv[1] == "tables":
        sys.stdout.write(tables_source())
    else:
        print(unavailable_reason() or "Lucene reference available: " + ":".join(_compiled()))

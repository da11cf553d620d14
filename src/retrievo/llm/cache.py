"""On-disk response cache for LLM calls, keyed by model identity + method + prompt + parameters.

Re-running an evaluation with the same model and prompts should not pay for the same
generations twice (an hour of CPU for a listwise run, or money on a hosted API). The cache
is one SQLite file: safe for several processes at once (WAL), atomic per entry, and
readable with any SQLite tool. Keys are SHA-256 hashes of a canonical JSON of everything
that determines the answer; values are JSON. Sampled calls (temperature > 0) are cached
too, keyed by their seed — a call without a seed at temperature > 0 is never cached, since
its answer is not meant to repeat.

The cache is off unless asked for (``LLM(cache=ResponseCache(path))``, a stage's
``cache=`` option, or ``RETRIEVO_LLM_CACHE=path``), so cost records and timings mean work
done unless a user chooses otherwise.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

import orjson

ENV_VAR = "RETRIEVO_LLM_CACHE"


class ResponseCache:
    """A persistent map from request keys to JSON responses (thread- and process-safe)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value BLOB NOT NULL)")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @staticmethod
    def key(identity: str, method: str, prompt: Any, params: Any) -> str | None:
        """The cache key of a request, or ``None`` for a request that must not be cached
        (sampling without a seed)."""
        if method == "generate":
            gen = params[0]  # GenerationParams.key(): [max_tokens, temperature, top_p, stop, seed]
            if gen[1] > 0 and gen[4] is None:
                return None
        blob = orjson.dumps([identity, method, prompt, params], option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(blob).hexdigest()

    def get(self, key: str | None) -> Any:
        if key is None:
            return None
        row = self._conn().execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def put(self, key: str | None, value: Any) -> None:
        if key is None:
            return
        self._conn().execute("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)",
                             (key, orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)))

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def clear(self) -> None:
        self._conn().execute("DELETE FROM responses")

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"


def cache_from(option: Any) -> ResponseCache | None:
    """The cache a stage option names: ``None``/``False``/``""`` → the
    ``RETRIEVO_LLM_CACHE`` environment variable if set, else no cache; a path → that file;
    a :class:`ResponseCache` → itself."""
    if isinstance(option, ResponseCache):
        return option
    if option in (None, False, ""):
        env = os.environ.get(ENV_VAR)
        return ResponseCache(env) if env else None
    return ResponseCache(str(option))


__all__ = ["ENV_VAR", "ResponseCache", "cache_from"]

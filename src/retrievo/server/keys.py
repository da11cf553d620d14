"""API keys: made by ``retrievo key create``, stored hashed, checked on every request.

A key is ``rvk_<id>_<secret>``: the id (8 hex characters) finds its record, the secret
(32 random bytes) proves possession. Only the sha256 of the whole key is stored; the key is
printed once. A plain sha256 (not a slow password hash) is the right tool here because the
secret is 256 random bits, not something a person chose: there is nothing to guess, and a
fast check keeps authentication off the latency budget. Comparison is constant-time.

The key file sits beside the index (``<index>.keys.json``) or the config, never inside the
index folder, whose garbage collection deletes every file a generation does not name. It
is written atomically with mode 0600 and re-read when it changes, so a key created while
the server runs works at once, and a key removed from the file stops working at once.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from retrievo.errors import ConfigError

SCOPES = ("read", "write")
_KEY = re.compile(r"^rvk_([0-9a-f]{8})_[A-Za-z0-9_\-]{20,100}$")


@dataclass(frozen=True)
class KeyRecord:
    """What a key may do: ``scope`` (``write`` includes ``read``) on ``collections``
    (None: every collection of the server)."""

    id: str
    scope: str
    collections: tuple[str, ...] | None
    created: str
    name: str = ""

    def allows(self, scope: str, collection: str) -> bool:
        if scope == "write" and self.scope != "write":
            return False
        return self.collections is None or collection in self.collections


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def default_key_file(target: str | Path) -> Path:
    """Where the keys of an index folder or config file live: beside it, as
    ``<name>.keys.json`` (an index folder's own files are garbage-collected)."""
    target = Path(target).resolve()
    if target.is_file():
        return target.with_name(target.stem + ".keys.json")
    return target.parent / f"{target.name}.keys.json"


class KeyStore:
    """The hashed keys of one server (a JSON file; missing means no keys yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._records: dict[str, tuple[str, KeyRecord]] = {}

    # ----------------------------------------------------------------- file
    def _load(self) -> dict[str, tuple[str, KeyRecord]]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._stamp, self._records = None, {}
            return self._records
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return self._records
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            records = {}
            for item in data.get("keys", []):
                cols = item.get("collections")
                rec = KeyRecord(str(item["id"]), str(item["scope"]), None if cols is None else tuple(cols),
                                str(item.get("created", "")), str(item.get("name", "")))
                if rec.scope not in SCOPES:
                    raise ValueError(f"unknown scope {rec.scope!r}")
                records[rec.id] = (str(item["sha256"]), rec)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(f"the key file {self.path} is unreadable ({exc}); fix or remove it") from exc
        self._stamp, self._records = stamp, records
        return records

    def _save(self, records: dict[str, tuple[str, KeyRecord]]) -> None:
        items = [{"id": r.id, "sha256": h, "scope": r.scope,
                  "collections": None if r.collections is None else list(r.collections),
                  "created": r.created, "name": r.name} for h, r in records.values()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"keys": items}, fh, indent=1)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._stamp = None

    # ----------------------------------------------------------------- API
    def create(self, scope: str, collections: Sequence[str] | None = None, name: str = "") -> str:
        """Make a key and store its hash; returns the key (shown once, never stored)."""
        if scope not in SCOPES:
            raise ConfigError(f"unknown scope {scope!r}; use read or write")
        with self._lock:
            records = dict(self._load())
            key_id = secrets.token_hex(4)
            while key_id in records:
                key_id = secrets.token_hex(4)
            key = f"rvk_{key_id}_{secrets.token_urlsafe(32)}"
            created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
            records[key_id] = (_digest(key), KeyRecord(key_id, scope, None if collections is None
                                                        else tuple(collections), created, name))
            self._save(records)
        return key

    def revoke(self, key_id: str) -> bool:
        """Remove a key by its id; returns whether it existed."""
        with self._lock:
            records = dict(self._load())
            if records.pop(key_id, None) is None:
                return False
            self._save(records)
            return True

    def records(self) -> list[KeyRecord]:
        with self._lock:
            return [r for _, r in self._load().values()]

    def check(self, key: str) -> KeyRecord | None:
        """The record of a valid key, else None."""
        m = _KEY.match(key)
        if m is None:
            return None
        with self._lock:
            found = self._load().get(m.group(1))
        if found is None:
            return None
        digest, record = found
        return record if hmac.compare_digest(digest, _digest(key)) else None


__all__ = ["KeyRecord", "KeyStore", "SCOPES", "default_key_file"]

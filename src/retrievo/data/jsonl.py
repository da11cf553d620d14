"""JSON Lines in and out: streaming reads, atomic writes, gzip either way.

Corpora are read one line at a time so a multi-gigabyte file never sits in memory, and
every error names the file and line so a user can open the culprit in an editor. Writers
go through :func:`atomic_writer`: a crash mid-write leaves the old file intact instead of
a truncated one that a later run would read as if it were complete.

``orjson`` is used when installed (several times faster); the stdlib ``json`` otherwise.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import secrets
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from retrievo.errors import DataFormatError

try:  # optional speed-up, never required
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None

GZIP_MAGIC = b"\x1f\x8b"
_UTF8_BOM = b"\xef\xbb\xbf"


# --------------------------------------------------------------------------------------
# Opening files
# --------------------------------------------------------------------------------------


def is_gzip(path: str | Path) -> bool:
    """True when the file starts with the gzip magic bytes (whatever its name says);
    a missing or empty file counts as gzip only when its name ends in ``.gz``."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except FileNotFoundError:
        head = b""
    return head == GZIP_MAGIC if head else str(path).endswith(".gz")


@contextlib.contextmanager
def open_binary(path: str | Path) -> Iterator[IO[bytes]]:
    """Open ``path`` for streaming binary reads, decompressing gzip transparently.

    The magic bytes decide, so a ``.gz`` that was already unpacked, or a gzip file with
    no ``.gz`` suffix, both read correctly. Works on pipes too (nothing is seeked).
    """
    try:
        raw = open(path, "rb")
    except FileNotFoundError:
        raise DataFormatError("no such file", path) from None
    except IsADirectoryError:
        raise DataFormatError("is a directory, expected a file", path) from None
    with raw:
        if raw.peek(2)[:2] == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped
        else:
            yield raw


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for every non-blank line, decoded as UTF-8.

    Line numbers are 1-based and count blank lines, so they match an editor's. The line
    terminator is removed; a UTF-8 byte-order mark on the first line is dropped.
    """
    line_no = 0
    try:
        with open_binary(path) as f:
            for line_no, raw in enumerate(f, start=1):
                if line_no == 1 and raw.startswith(_UTF8_BOM):
                    raw = raw[len(_UTF8_BOM):]
                if not raw.strip():
                    continue
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as err:
                    raise DataFormatError(f"not valid UTF-8 ({err.reason} at byte {err.start})",
                                          path, line_no) from None
                yield line_no, text.rstrip("\r\n")
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataFormatError(f"corrupt or truncated gzip data after line {line_no}: {err}",
                              path, line_no + 1) from None


def count_lines(path: str | Path) -> int:
    """Number of non-blank lines, without parsing them (cheap enough for a progress bar)."""
    count = 0
    try:
        with open_binary(path) as f:
            for raw in f:
                if raw.strip():
                    count += 1
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        raise DataFormatError(f"corrupt or truncated gzip data after line {count}: {err}", path) from None
    return count


# --------------------------------------------------------------------------------------
# JSON Lines
# --------------------------------------------------------------------------------------


def _loads(text: str) -> Any:
    return _orjson.loads(text) if _orjson is not None else json.loads(text)


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for every non-blank line of a JSONL(.gz) file.

    Raises :class:`DataFormatError` naming file and line when a line is not valid JSON
    or not a JSON object.
    """
    for line_no, text in iter_lines(path):
        try:
            record = _loads(text)
        except ValueError as err:
            raise DataFormatError(f"malformed JSON: {err}", path, line_no) from None
        if not isinstance(record, dict):
            raise DataFormatError(f"expected a JSON object, got {type(record).__name__}",
                                  path, line_no)
        yield line_no, record


def _to_json_value(value: Any) -> Any:
    """Fallback for values json/orjson cannot encode by themselves (read-only mappings,
    numpy scalars and arrays, tuples of those)."""
    if isinstance(value, Mapping):
        return dict(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"cannot write a {type(value).__name__} as JSON")


def dumps_line(record: Mapping[str, Any]) -> bytes:
    """One JSON object as UTF-8 bytes ending in a newline."""
    if _orjson is not None:
        return _orjson.dumps(dict(record), default=_to_json_value,
                             option=_orjson.OPT_APPEND_NEWLINE | _orjson.OPT_SERIALIZE_NUMPY)
    return (json.dumps(dict(record), ensure_ascii=False, default=_to_json_value) + "\n").encode("utf-8")


def write_jsonl(path: str | Path, records: Iterable[Mapping[str, Any]]) -> int:
    """Write one JSON object per line, atomically; gzip when ``path`` ends in ``.gz``.

    Returns the number of records written. ``records`` may be a generator: it is consumed
    once, line by line.
    """
    count = 0
    with atomic_writer(path) as f:
        for record in records:
            f.write(dumps_line(record))
            count += 1
    return count


# --------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_writer(path: str | Path, compress: bool | None = None) -> Iterator[IO[bytes]]:
    """A binary file handle whose contents replace ``path`` only if the block succeeds.

    Data goes to ``<path>.tmp-XXXXXXXX`` in the same folder (so the final rename never
    crosses file systems), is flushed to disk, then moved over ``path`` with
    :func:`os.replace`. On error the temporary file is removed and ``path`` is untouched.
    ``compress`` defaults to "``path`` ends in ``.gz``"; gzip output carries no timestamp,
    so writing the same data twice gives identical bytes.
    """
    path = Path(path)
    if compress is None:
        compress = path.name.endswith(".gz")
    if not path.parent.is_dir():
        raise DataFormatError("cannot write: the parent folder does not exist", path)
    tmp = path.with_name(f"{path.name}.tmp-{secrets.token_hex(4)}")
    raw = open(tmp, "wb", buffering=1 << 20)
    try:
        with raw:
            if compress:
                with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as out:
                    yield out
            else:
                yield raw
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


__all__ = [
    "GZIP_MAGIC",
    "atomic_writer",
    "count_lines",
    "dumps_line",
    "is_gzip",
    "iter_jsonl",
    "iter_lines",
    "open_binary",
    "write_jsonl",
]

"""One served index: a reader snapshot per search, and one writer that group-commits.

Searches never see a write half-applied. The writer mutates its own index object (the
formats change in place while they build a generation); readers use a *separate* object
opened from the published generation, which nothing mutates. After a commit the writer
opens the new generation and swaps it in with one reference assignment, so every search
takes one snapshot (``collection.snapshot()``) and reads only that, however long it runs
and however many writes land meanwhile; old snapshots stay readable through their open
memory maps after garbage collection (see :mod:`retrievo.index.lifecycle`).

Writes are acknowledged only when durable: the index's ``add``/``delete`` write and fsync
the new files, publish the manifest and replace ``CURRENT`` (fsync'd) before they return,
and the future a request waits on is resolved only after that and after the new snapshot
is in place (so a client that got its acknowledgement finds its document in the next
search). Concurrent writes are batched (group commit): the writer thread takes every
write waiting in its queue, validates each on its own (duplicate or unknown ids fail only
that request), and commits consecutive adds as one ``add`` and consecutive deletes as one
``delete`` — one fsync'd generation for many requests, instead of one each.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrievo.errors import (ConfigError, DuplicateIdError, IndexConflictError, PipelineSpecError, RetrievoError,
                             UnknownIdError)
from retrievo.index.lifecycle import open_index, read_generation
from retrievo.pipeline import CutOff, Stage, Then
from retrievo.registry import REGISTRY
from retrievo.types import Document, Queries, Rankings

log = logging.getLogger("retrievo.server")

#: default pipelines per index format, when the config names none
DEFAULT_PIPELINES: dict[str, dict[str, str]] = {
    "retrievo-inverted": {"bm25": "bm25", "bm25-rm3": "bm25 >> rm3 >> bm25"},
    "retrievo-vectors": {"dense": "dense"},
    "retrievo-impacts": {"splade": "splade"},
    "retrievo-multivectors": {"maxsim": "maxsim"},
}
#: option types that name files or models: refused in request specs even when open specs are on
UNSAFE_OPTION_TYPES = ("index", "path", "model", "str")
#: formats whose ``add`` takes documents (others need vectors computed elsewhere)
WRITABLE_FORMATS = ("retrievo-inverted",)
PIPELINE_CACHE = 128
GROUP_MAX_DOCS = 5000  # documents committed in one generation at most
REFRESH_SECONDS = 1.0
#: merge the segments once a commit leaves more than this many (each commit adds one; many small
#: segments slow every search); the merge runs in the writer thread while searches read the old snapshot
MERGE_SEGMENTS = 32  # how often a search checks for generations published by other processes


class NotWritableError(ConfigError):
    """The collection's index format does not take documents over HTTP."""


class PipelineNotAllowedError(PipelineSpecError):
    """The request named a pipeline the server does not allow."""


@dataclass
class _Write:
    kind: str  # "add" | "upsert" | "delete"
    docs: list[Document] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    future: Future = field(default_factory=Future)
    replaced: list[str] = field(default_factory=list)  # upsert: the ids it replaces


def _inert_registry():
    """The registry with every file-, model- or text-typed option read as plain text."""
    import dataclasses

    from retrievo.registry import Option, Registry

    def inert(o: Option) -> Option:
        return dataclasses.replace(o, type="str", min=None, max=None, choices=()) \
            if o.type in UNSAFE_OPTION_TYPES else o

    entries = {e.name: e if e.options is None else dataclasses.replace(e, options=tuple(inert(o) for o in e.options))
               for e in REGISTRY}
    return Registry(entries, entry_points=False)


class Collection:
    """An index served under ``name`` with the pipelines it allows (``{name: spec}``)."""

    def __init__(self, name: str, path: str | Path, pipelines: dict[str, str] | None = None,
                 open_specs: bool = False):
        self.name = name
        self.path = Path(path)
        self._lock = threading.Lock()
        self._reader = open_index(self.path)
        self.format = self._reader.info.get("manifest", {}).get("format") or getattr(self._reader, "FORMAT", "")
        self.pipelines = dict(pipelines or DEFAULT_PIPELINES.get(self.format, {}))
        if not self.pipelines:
            raise ConfigError(f"collection {name!r}: name at least one pipeline for a {self.format} index")
        for pname, spec in self.pipelines.items():
            self._check(spec, allow_unsafe=True)  # the operator's own specs may name models and files
        self.open_specs = open_specs
        self._checked_at = time.monotonic()
        self._cache: collections.OrderedDict[tuple[str, int | None, int], Stage] = collections.OrderedDict()
        self._queue: queue.Queue[_Write | None] = queue.Queue()
        self._writer_index: Any = None
        self._thread: threading.Thread | None = None
        self.stats = {"searches": 0, "writes": 0, "commits": 0, "merges": 0, "documents_added": 0,
                      "documents_replaced": 0, "documents_deleted": 0}

    def count(self, name: str, n: int = 1) -> None:
        """Add to a service counter (searches run in many threads: ``+=`` alone could lose counts)."""
        with self._lock:
            self.stats[name] += n

    # ------------------------------------------------------------------ reading
    @property
    def writable(self) -> bool:
        return self.format in WRITABLE_FORMATS

    def snapshot(self) -> Any:
        """The index of the current generation: one object, never mutated; a search reads
        only this for its whole run. Generations published by another process (``retrievo
        delete`` on the same folder) are picked up within :data:`REFRESH_SECONDS`."""
        now = time.monotonic()
        if now - self._checked_at > REFRESH_SECONDS:
            self._checked_at = now
            try:
                if read_generation(self.path) != self._reader.generation:
                    self._swap(open_index(self.path))
            except RetrievoError as exc:  # keep serving the generation we have
                log.warning("collection %s: could not refresh (%s)", self.name, exc)
        return self._reader

    def _swap(self, index: Any) -> None:
        with self._lock:
            if index.generation >= self._reader.generation:
                self._reader = index
                for key in [k for k in self._cache if k[2] != index.generation]:
                    del self._cache[key]

    def resolve(self, pipeline: str | None) -> tuple[str, str]:
        """``(name, spec)`` of the pipeline a request names: one of the allowed ones by name
        or by spec, or (with open specs) any spec whose options name no file or model."""
        if pipeline is None:
            name = next(iter(self.pipelines))
            return name, self.pipelines[name]
        if pipeline in self.pipelines:
            return pipeline, self.pipelines[pipeline]
        for name, spec in self.pipelines.items():
            if pipeline.strip() == spec:
                return name, spec
        if not self.open_specs:
            raise PipelineNotAllowedError(
                f"pipeline {pipeline!r} is not allowed on collection {self.name!r}; allowed: "
                + ", ".join(f"{n} ({s})" for n, s in self.pipelines.items()))
        self._check(pipeline, allow_unsafe=False)
        return pipeline.strip(), pipeline.strip()

    def _check(self, spec: str, allow_unsafe: bool) -> None:
        """Check a spec. A request's spec is parsed against a copy of the registry whose
        file-naming options are plain text, so checking it never touches the file system
        (a spec naming ``index=/etc`` must not tell the client whether ``/etc`` exists);
        then any such option it sets is refused."""
        from retrievo.spec import parse_spec

        if allow_unsafe:
            parse_spec(spec)
            return
        parsed = parse_spec(spec, _inert_registry())
        for call in parsed.calls():
            entry = REGISTRY.entry(call.name)
            if not entry.typed:
                raise PipelineNotAllowedError(f"stage {call.name!r} takes untyped options; only the server's "
                                              "named pipelines may use it")
            types = {o.name: o.type for o in entry.options or ()}
            for opt, _ in call.options:
                if types.get(opt) in UNSAFE_OPTION_TYPES:
                    raise PipelineNotAllowedError(
                        f"option {call.name}({opt}=...) names a file, model or text and is not accepted in a "
                        "request; ask the operator to add the pipeline to the server's list")
        parse_spec(spec)  # with the real registry: safe now, and checks what the copy could not

    def pipeline(self, spec: str, index: Any, k: int | None = None) -> Stage:
        """The built pipeline for ``spec`` on the snapshot ``index`` (cut to ``k``),
        cached per generation: building parses the spec and opens nothing new."""
        key = (spec, k, index.generation)
        with self._lock:
            stage = self._cache.get(key)
            if stage is not None:
                self._cache.move_to_end(key)
                return stage
        from retrievo.pipeline import parse

        stage = parse(spec, {"index": index})
        if k is not None and issubclass(stage.gives, Rankings):
            stage = Then.of(stage, CutOff(k))
        with self._lock:
            self._cache[key] = stage
            while len(self._cache) > PIPELINE_CACHE:
                self._cache.popitem(last=False)
        return stage

    def warm(self, query: str = "warm up") -> None:
        """Build the default pipeline and run it once, so the first client does not pay for
        compiling kernels and deriving the index's arrays (a second, not a millisecond)."""
        name, spec = self.resolve(None)
        index = self.snapshot()
        stage = self.pipeline(spec, index, 10)
        if Queries in stage.takes:
            stage(Queries(["q"], [query]))

    def info(self) -> dict[str, Any]:
        index = self.snapshot()
        pipelines = []
        for name, spec in self.pipelines.items():
            from retrievo.spec import _io, parse_spec

            io = _io(parse_spec(spec).node, REGISTRY) or (("queries",), "rankings")
            pipelines.append({"name": name, "spec": spec, "takes": list(io[0]), "gives": io[1]})
        return {"name": self.name, "format": self.format, "generation": int(index.generation),
                "documents": len(index), "writable": self.writable, "pipelines": pipelines,
                "open_specs": self.open_specs}

    # ------------------------------------------------------------------ writing
    def add(self, docs: list[Document]) -> Future:
        """Queue documents to add; the future resolves to the generation that holds them."""
        return self._submit(_Write("add", docs=docs))

    def upsert(self, docs: list[Document]) -> Future:
        """Queue documents to add or replace by id; the future resolves to ``(generation,
        ids that were replaced)``."""
        return self._submit(_Write("upsert", docs=docs))

    def delete(self, ids: list[str]) -> Future:
        return self._submit(_Write("delete", ids=ids))

    def _submit(self, write: _Write) -> Future:
        if not self.writable:
            raise NotWritableError(f"collection {self.name!r} is a {self.format} index, which does not take "
                                   "documents over HTTP")
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._writer_loop, name=f"writer-{self.name}", daemon=True)
                self._thread.start()
        self._queue.put(write)
        return write.future

    def close(self, timeout: float = 30.0) -> None:
        """Finish queued writes and stop the writer thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def _writer_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, docs, stop = [first], len(first.docs) + len(first.ids), False
            while docs < GROUP_MAX_DOCS:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                docs += len(nxt.docs) + len(nxt.ids)
            try:
                self._commit_batch(batch)
            except BaseException as exc:  # never leave a client waiting
                log.exception("collection %s: write failed", self.name)
                self._writer_index = None  # reopen from the published generation before the next write
                for w in batch:
                    if not w.future.done():
                        w.future.set_exception(exc)
            if stop:
                return

    def _writer(self) -> Any:
        if self._writer_index is None:
            self._writer_index = open_index(self.path)
        return self._writer_index

    def _commit_batch(self, batch: list[_Write]) -> None:
        groups: list[list[_Write]] = []
        for w in batch:
            if groups and groups[-1][0].kind == w.kind:
                groups[-1].append(w)
            else:
                groups.append([w])
        for group in groups:
            ok = self._validate(group)
            if not ok:
                continue
            try:
                self._apply(ok)
            except IndexConflictError:  # another process published: reopen, check again, apply
                self._writer_index = None
                self._apply_each(self._validate(ok))
            except Exception as exc:  # noqa: BLE001 - one bad request must not fail the others: retry each alone
                self._writer_index = None
                if len(ok) == 1:
                    ok[0].future.set_exception(exc)
                else:
                    self._apply_each(ok)
            committed = [w for w in ok if not w.future.done()]
            if committed and len(getattr(self._writer(), "segments", ())) > MERGE_SEGMENTS:
                try:
                    self._writer().merge()  # a new generation with the same documents: acknowledging stays correct
                    self.count("merges")
                except RetrievoError as exc:  # the write is published already; the merge can wait
                    self._writer_index = None
                    log.warning("collection %s: merge failed (%s)", self.name, exc)
            if committed:
                # the new generation is published and fsync'd; make it the search snapshot, then acknowledge
                generation = int(self._writer().generation)
                self._swap(open_index(self.path))
                self.count("commits")
                for w in committed:
                    w.future.set_result((generation, w.replaced) if w.kind == "upsert" else generation)

    def _apply_each(self, writes: list[_Write]) -> None:
        for w in writes:
            try:
                self._apply([w])
            except Exception as exc:  # noqa: BLE001 - reported to that request's client
                self._writer_index = None
                w.future.set_exception(exc)

    def _validate(self, group: list[_Write]) -> list[_Write]:
        """The writes of ``group`` that can be applied; the others fail now, alone."""
        index = self._writer()
        seen: set[str] = set()
        ok = []
        for w in group:
            ids = [d.doc_id for d in w.docs] if w.kind in ("add", "upsert") else w.ids
            if w.kind in ("add", "upsert"):
                # an upsert may replace what the index holds, but one commit cannot hold two
                # versions of an id: repeats within the group are refused like adds
                dup = [i for i in ids if i in seen or (w.kind == "add" and i in index)]
                if len(set(ids)) != len(ids):
                    dup += [i for i in ids if ids.count(i) > 1]
                if dup:
                    hint = "(delete them first, or send upsert)" if w.kind == "add" else \
                        "(each id once per commit; send the later version again)"
                    w.future.set_exception(DuplicateIdError(
                        f"document id(s) already in collection {self.name!r} or repeated: {sorted(set(dup))[:5]} "
                        f"{hint}"))
                    continue
                if w.kind == "upsert":
                    w.replaced = [i for i in ids if i in index]
            else:
                missing = [i for i in ids if i not in index or i in seen]
                if missing:
                    w.future.set_exception(UnknownIdError(f"no document {missing[0]!r} in collection {self.name!r}"))
                    continue
            seen.update(ids)
            ok.append(w)
        return ok

    def _apply(self, writes: list[_Write]) -> None:
        index = self._writer()
        if writes[0].kind == "add":
            docs = [d for w in writes for d in w.docs]
            index.add(docs, workers=1)  # in-process: never fork a threaded server
            self.count("documents_added", len(docs))
        elif writes[0].kind == "upsert":
            docs = [d for w in writes for d in w.docs]
            replaced, added = index.upsert(docs, workers=1)
            self.count("documents_added", added)
            self.count("documents_replaced", replaced)
        else:
            ids = [i for w in writes for i in w.ids]
            index.delete(ids)
            self.count("documents_deleted", len(ids))
        self.count("writes", len(writes))


__all__ = ["Collection", "DEFAULT_PIPELINES", "NotWritableError", "PipelineNotAllowedError"]

"""What the service does, independent of HTTP: the operations REST and MCP both call.

Each operation takes one of the typed requests of :mod:`retrievo.server.models` and
returns the matching response (as a plain dict that validates against it), so the two
front ends cannot drift apart: they differ only in how a request arrives.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

from retrievo.errors import ConfigError, PipelineSpecError, ResourceError, UnknownIdError
from retrievo.filtering import with_filter
from retrievo.pipeline import Stage, Then, _new_costs
from retrievo.server.collection import Collection, PipelineNotAllowedError
from retrievo.server.keys import KeyStore
from retrievo.server.models import (AddDocumentsRequest, AskRequest, FetchRequest, RerankRequest, SearchRequest)
from retrievo.types import Answers, Cost, Document, Queries, Rankings

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use marks: cannot clash with text (stripped from it first)
SNIPPET_TOKENS = 48


class UnknownCollectionError(ResourceError):
    """A request named a collection the server does not serve."""


def _costs(costs: tuple[Cost, ...]) -> list[dict[str, Any]]:
    return [c.to_dict() for c in costs]


def _spans(marked: str) -> tuple[str, list[dict[str, int]]]:
    """Plain snippet text and the ``[start, end)`` ranges the marks enclosed."""
    out: list[str] = []
    spans, pos, start = [], 0, None
    for ch in marked:
        if ch == _OPEN:
            start = pos
        elif ch == _CLOSE:
            if start is not None:
                spans.append({"start": start, "end": pos})
            start = None
        else:
            out.append(ch)
            pos += 1
    return "".join(out), spans


class Service:
    """The collections a server serves (the first is the default), its keys, and whether
    reading needs a key too (``private``)."""

    def __init__(self, collections: Mapping[str, Collection], keys: KeyStore | None = None, private: bool = False):
        if not collections:
            raise ConfigError("a server needs at least one collection")
        self.collections = dict(collections)
        self.keys = keys
        self.private = private

    def collection(self, name: str | None) -> Collection:
        if name is None:
            return next(iter(self.collections.values()))
        found = self.collections.get(name)
        if found is None:
            raise UnknownCollectionError(f"no collection {name!r}; this server serves "
                                         + ", ".join(repr(n) for n in self.collections))
        return found

    def close(self) -> None:
        for c in self.collections.values():
            c.close()

    # ------------------------------------------------------------------ presentation
    def _hits(self, index: Any, ranked, query: str, snippets: bool) -> list[dict[str, Any]]:
        ids = [str(d) for d in ranked.doc_ids.tolist()]
        hits = [{"rank": i + 1, "doc_id": d, "score": float(s)} for i, (d, s) in enumerate(zip(ids, ranked.scores))]
        if not snippets or not ids or not getattr(index, "store", False):
            return hits
        from retrievo.text.analyzer import get_analyzer
        from retrievo.text.highlight import highlight

        analyzer = getattr(index, "analyzer", None) or get_analyzer()
        terms = set(analyzer(query))
        try:
            docs = index.documents(ids)
        except UnknownIdError:  # a reranked list naming documents deleted since: show what remains
            docs = [index.document(d) if d in index else None for d in ids]
        for hit, doc in zip(hits, docs):
            if doc is None:
                continue
            text = doc.text.replace(_OPEN, "").replace(_CLOSE, "")
            snippet, spans = _spans(highlight(text, terms, analyzer, width=SNIPPET_TOKENS, marks=(_OPEN, _CLOSE)))
            hit.update(title=doc.title, snippet=snippet, highlights=spans)
        return hits

    # ------------------------------------------------------------------ operations
    def search(self, req: SearchRequest) -> dict[str, Any]:
        col = self.collection(req.collection)
        name, spec = col.resolve(req.pipeline)
        index = col.snapshot()  # one generation for the whole request
        stage = col.pipeline(spec, index, req.k)
        if not issubclass(stage.gives, Rankings):
            raise PipelineNotAllowedError(f"pipeline {name!r} gives answers, not rankings: use /v1/ask")
        start = time.perf_counter()
        # a copy whose retrievers filter (checked against the snapshot's columns first)
        stage = with_filter(stage, req.filter)
        rankings = stage(Queries(["q"], [req.query]))
        hits = self._hits(index, rankings[0].top(req.k), req.query, req.snippets)
        col.count("searches")
        return {"collection": col.name, "pipeline": spec, "generation": int(index.generation), "query": req.query,
                "results": hits, "costs": _costs(rankings.costs), "took_ms": (time.perf_counter() - start) * 1e3}

    def rerank(self, req: RerankRequest) -> dict[str, Any]:
        col = self.collection(req.collection)
        name, spec = col.resolve(req.pipeline)
        index = col.snapshot()
        stage = col.pipeline(spec, index, req.k)
        if Rankings not in stage.takes or not issubclass(stage.gives, Rankings):
            raise PipelineSpecError(f"pipeline {name!r} ({spec}) does not take a ranked list and give one; "
                                    "rerank needs e.g. a reranker or a retriever that scores candidates")
        ids = [c.doc_id for c in req.candidates]
        if len(set(ids)) != len(ids):
            raise PipelineSpecError("candidate document ids must be distinct")
        missing = [d for d in ids if d not in index]
        if missing:
            raise UnknownIdError(f"no document {missing[0]!r} in collection {col.name!r}")
        scores = [c.score if c.score is not None else float(len(ids) - i) for i, c in enumerate(req.candidates)]
        ranking = Rankings.from_lists(Queries(["q"], [req.query]), [(ids, scores)])
        start = time.perf_counter()
        out = stage(ranking)
        ranked = out[0] if req.k is None else out[0].top(req.k)
        return {"collection": col.name, "pipeline": spec, "generation": int(index.generation), "query": req.query,
                "results": self._hits(index, ranked, req.query, req.snippets), "costs": _costs(out.costs),
                "took_ms": (time.perf_counter() - start) * 1e3}

    def prepare_ask(self, req: AskRequest) -> tuple[Collection, str, Any, Stage]:
        """Check an ask request before anything streams: its errors become HTTP statuses."""
        col = self.collection(req.collection)
        name, spec = col.resolve(req.pipeline)
        index = col.snapshot()
        stage = col.pipeline(spec, index)
        if not issubclass(stage.gives, Answers):
            readers = [n for n, s in col.pipelines.items() if self._gives_answers(col, s)]
            raise PipelineNotAllowedError(
                f"pipeline {name!r} gives rankings; ask needs one whose last stage is a reader"
                + (f" (this collection has: {', '.join(readers)})" if readers else
                   " (this collection has none configured)"))
        if Queries not in stage.takes:
            raise PipelineSpecError(f"pipeline {name!r} ({spec}) does not start from a query; ask needs e.g. "
                                    "'bm25 % 5 >> READER'")
        return col, spec, index, stage

    @staticmethod
    def _gives_answers(col: Collection, spec: str) -> bool:
        from retrievo.registry import REGISTRY
        from retrievo.spec import _io, parse_spec

        try:
            io = _io(parse_spec(spec).node, REGISTRY)
        except PipelineSpecError:
            return False
        return io is not None and io[1] == "answers"

    def ask_events(self, req: AskRequest, prepared=None) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(event, data)`` pairs: ``context`` (what the reader reads), ``token`` (answer
        text as it is produced), ``done`` (the whole answer, citations, costs).

        A reader that offers ``stream_answer(rankings)`` — an iterator of text pieces whose
        last item is the :class:`Answers` — streams token by token; any other reader's
        answer arrives as one piece when it is complete.
        """
        col, spec, index, stage = prepared or self.prepare_ask(req)
        stages = stage.stages if isinstance(stage, Then) else (stage,)
        reader, before = stages[-1], stages[:-1]
        start = time.perf_counter()
        data: Any = Queries(["q"], [req.query])
        for s in before:
            data = s(data)
        context = self._hits(index, data[0], req.query, True) if isinstance(data, Rankings) else []
        yield "context", {"collection": col.name, "pipeline": spec, "generation": int(index.generation),
                          "results": context}
        stream = getattr(reader, "stream_answer", None)
        answers = None
        if callable(stream):
            began = time.perf_counter()
            for item in stream(reader._accept(data)):
                if isinstance(item, Answers):
                    answers = item
                else:
                    yield "token", {"text": str(item)}
            if answers is None:
                raise TypeError(f"reader {reader.name!r}: stream_answer ended without its Answers")
            own = _new_costs(data.costs, answers.costs)  # what the reader recorded beyond its input's
            if not own or own[-1].stage != reader.name:
                own = (*own, Cost(reader.name, time.perf_counter() - began, len(data)))
            answers = answers.with_costs((*data.costs, *own))
        else:
            answers = reader(data)
            yield "token", {"text": answers[0].text}
        answer = answers[0]
        titles = {}
        if getattr(index, "store", False):
            for d in answer.citations:
                if d in index:
                    titles[d] = index.document(d).title
        col.count("searches")
        yield "done", {"collection": col.name, "pipeline": spec, "generation": int(index.generation),
                       "query": req.query, "answer": answer.text,
                       "citations": [{"doc_id": d, "title": titles.get(d, "")} for d in answer.citations],
                       "context": context, "costs": _costs(answers.costs),
                       "took_ms": (time.perf_counter() - start) * 1e3}

    def ask(self, req: AskRequest) -> dict[str, Any]:
        done = None
        for event, data in self.ask_events(req):
            if event == "done":
                done = data
        assert done is not None
        return done

    def fetch(self, req: FetchRequest) -> dict[str, Any]:
        col = self.collection(req.collection)
        index = col.snapshot()
        if not getattr(index, "store", False):
            raise ConfigError(f"collection {col.name!r} stores no document text")
        doc = index.document(req.doc_id)
        return {"collection": col.name, "doc_id": doc.doc_id, "title": doc.title, "text": doc.text,
                "meta": dict(doc.meta)}

    def add_future(self, req: AddDocumentsRequest):
        col = self.collection(req.collection)
        docs = [Document(d.doc_id, d.text, d.title, d.meta) for d in req.documents]
        return col, (col.upsert(docs) if req.upsert else col.add(docs))

    def delete_future(self, collection: str | None, doc_id: str):
        col = self.collection(collection)
        return col, col.delete([doc_id])

    def stats(self, collection: str | None) -> dict[str, Any]:
        col = self.collection(collection)
        index = col.snapshot()
        describe = index.describe() if hasattr(index, "describe") else {}
        describe.pop("path", None)  # the server's file layout is not the client's business
        return {"collection": col.name, "index": describe, "service": dict(col.stats)}


__all__ = ["Service", "UnknownCollectionError"]

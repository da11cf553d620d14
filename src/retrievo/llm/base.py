"""One protocol for every language-model backend, with capabilities declared.

Rerankers, readers and rewriters talk to an :class:`LLM`, never to transformers or an HTTP
client directly, so the same method runs on a local model, a GGUF file or any
OpenAI-compatible server. What a method can ask for:

- ``generate(prompts, params)`` → :class:`Completion` (text, token counts);
- ``next_token_logprobs(prompts, candidates)`` → the log-probability of each candidate
  string's *first* token as the next token (pointwise "Yes"/"No", FIRST's single-token
  listwise ranking) — one forward pass per prompt, no generation;
- ``continuation_logprobs(prompts, continuations)`` → log P(continuation | prompt) summed
  over its tokens (query likelihood, UPR);
- ``segment_attention(segments, query_segment)`` → attention mass that one segment's tokens
  pay to each segment, per layer (in-context reranking, ICR) — only backends that run the
  model themselves can offer it;
- ``count_tokens`` / ``truncate`` for budgets, and ``context_length``.

A backend lists what it offers in :attr:`LLM.capabilities`; asking for anything else raises
:class:`~retrievo.errors.CapabilityError` naming the capability, before any work is done
(:meth:`LLM.require`).

The public methods are implemented once, here: they consult the optional on-disk response
cache (:mod:`retrievo.llm.cache`), call the backend's ``_generate`` /
``_next_token_logprobs`` / ... for what is missing, and charge the cost record of the stage
running now (:func:`retrievo.pipeline.charge`): one *call* per prompt, prompt and completion
tokens, and *forward passes* counted per sequence (a prefill is one pass, each further
generated token one more; a logprob request is one pass). A cached answer charges nothing
but ``cache_hits``. So every method's cost record means the same thing on every backend.

Prompts are data: a :class:`Prompt` is chat messages plus an optional ``assistant_prefix``
(text the model's answer is forced to start with, e.g. ``"["`` before FIRST's first
identifier); the backend renders it with its model's chat template. Templates that
methods fill in live in :mod:`retrievo.llm.prompts` as files.
"""

from __future__ import annotations

import math
from abc import ABC
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrievo.errors import CapabilityError, ConfigError

#: everything a backend may offer
CAPABILITIES = ("generate", "next_token_logprobs", "continuation_logprobs", "segment_attention", "count_tokens")


@dataclass(frozen=True)
class Message:
    """One chat message (``role`` is ``system``, ``user`` or ``assistant``)."""

    role: str
    content: str

    def __post_init__(self):
        if self.role not in ("system", "user", "assistant"):
            raise ConfigError(f"message role must be system, user or assistant, got {self.role!r}")


@dataclass(frozen=True)
class Prompt:
    """Chat messages, and text the assistant's reply is forced to begin with.

    ``Prompt.chat("Rank these...", system="You are...")``; ``Prompt.raw(text)`` for a plain
    completion prompt that no chat template wraps.
    """

    messages: tuple[Message, ...] = ()
    assistant_prefix: str = ""
    raw_text: str | None = None

    @classmethod
    def chat(cls, user: str, system: str | None = None, assistant_prefix: str = "") -> "Prompt":
        msgs = ((Message("system", system),) if system else ()) + (Message("user", user),)
        return cls(msgs, assistant_prefix)

    @classmethod
    def raw(cls, text: str) -> "Prompt":
        return cls((), "", text)

    @property
    def is_raw(self) -> bool:
        return self.raw_text is not None

    def key(self) -> list[Any]:
        """A JSON-able value that identifies the prompt (for the response cache)."""
        if self.is_raw:
            return ["raw", self.raw_text]
        return [[m.role, m.content] for m in self.messages] + [["prefix", self.assistant_prefix]]


PromptLike = "Prompt | str"


def as_prompt(p: Any) -> Prompt:
    """A :class:`Prompt`; a plain string is one user message."""
    if isinstance(p, Prompt):
        return p
    if isinstance(p, str):
        return Prompt.chat(p)
    raise TypeError(f"a prompt is a Prompt or a str, got {type(p).__name__}")


@dataclass(frozen=True)
class GenerationParams:
    """Decoding parameters (greedy by default: ``temperature=0``)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        object.__setattr__(self, "stop", tuple(self.stop))

    def key(self) -> list[Any]:
        return [self.max_tokens, self.temperature, self.top_p, list(self.stop), self.seed]


@dataclass(frozen=True)
class Completion:
    """A generated text and what it cost."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    #: per generated token: {token text: logprob} of the top alternatives, when asked for
    top_logprobs: tuple[Mapping[str, float], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "finish_reason": self.finish_reason, "top_logprobs": [dict(t) for t in self.top_logprobs]}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Completion":
        return cls(d["text"], int(d["prompt_tokens"]), int(d["completion_tokens"]), d.get("finish_reason", "stop"),
                   tuple(d.get("top_logprobs", ())))


@dataclass(frozen=True)
class Scored:
    """What a backend returns for a scoring request: the numbers and the prompt size."""

    values: np.ndarray
    prompt_tokens: int


class LLM(ABC):
    """A language model behind one protocol. Subclasses implement the ``_``-methods for the
    capabilities they list, plus :meth:`count_tokens`; the public methods add caching and
    cost accounting.

    ``identity`` names the model exactly (a content hash for local files, name@revision for
    a hub model, the server URL and model name for HTTP); the response cache keys on it.
    """

    #: capabilities this backend offers (a subset of :data:`CAPABILITIES`)
    capabilities: frozenset[str] = frozenset()
    #: maximum tokens (prompt + completion) the model accepts
    context_length: int = 2048
    #: how many prompts one batched call may carry
    max_batch: int = 8

    def __init__(self, identity: str, cache: Any = None):
        self.identity = identity
        self.cache = cache

    # ------------------------------------------------------------------ declared abilities
    def require(self, *capabilities: str, method: str = "this method") -> None:
        """Raise :class:`CapabilityError` unless every capability is offered."""
        missing = [c for c in capabilities if c not in self.capabilities]
        if missing:
            raise CapabilityError(
                f"{method} needs {', '.join(missing)}, which the {type(self).__name__} backend ({self.identity}) "
                f"does not offer (it offers: {', '.join(sorted(self.capabilities)) or 'nothing'}). "
                + ("Attention weights need a model run in this process: use the local transformers backend."
                   if "segment_attention" in missing else ""))

    # ------------------------------------------------------------------ token budgets
    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes in this model's tokenizer (backends without a tokenizer
        estimate: 4 characters a token, rounded up)."""
        return max(1, math.ceil(len(text) / 4)) if text else 0

    def truncate(self, text: str, max_tokens: int) -> str:
        """``text`` cut to at most ``max_tokens`` tokens (at a word boundary where the
        tokenizer is unknown)."""
        if max_tokens <= 0:
            return ""
        if self.count_tokens(text) <= max_tokens:
            return text
        lo, hi = 0, len(text)
        while lo < hi:  # longest prefix that fits
            mid = (lo + hi + 1) // 2
            if self.count_tokens(text[:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        cut = text[:lo]
        space = cut.rfind(" ")
        return cut[:space] if space > lo // 2 else cut

    def prompt_tokens(self, prompt: "Prompt | str") -> int:
        """Tokens the rendered prompt takes (template included where the backend knows it)."""
        p = as_prompt(prompt)
        if p.is_raw:
            return self.count_tokens(p.raw_text or "")
        overhead = 8 * len(p.messages)  # role markers of a typical chat template
        return overhead + sum(self.count_tokens(m.content) for m in p.messages) + self.count_tokens(p.assistant_prefix)

    # ------------------------------------------------------------------ public protocol
    def generate(self, prompts: Sequence["Prompt | str"], params: GenerationParams | None = None,
                 top_logprobs: int = 0) -> list[Completion]:
        """One completion per prompt (``top_logprobs`` > 0 also returns that many
        alternatives per generated token, where the backend can)."""
        self.require("generate", method="generate()")
        params = params or GenerationParams()
        ps = [as_prompt(p) for p in prompts]
        keys = [self._key("generate", p, params.key(), top_logprobs) for p in ps]
        out: list[Completion | None] = [self._cached(k, Completion.from_json) for k in keys]
        todo = [i for i, c in enumerate(out) if c is None]
        for start in range(0, len(todo), self.max_batch):
            chunk = todo[start:start + self.max_batch]
            made = self._generate([ps[i] for i in chunk], params, top_logprobs)
            if len(made) != len(chunk):
                raise RuntimeError(f"{type(self).__name__}._generate returned {len(made)} completions "
                                   f"for {len(chunk)} prompts")
            for i, c in zip(chunk, made):
                out[i] = c
                self._store(keys[i], c.to_json())
        self._charge_hits(len(ps) - len(todo))
        self._charge(calls=len(todo), prompt_tokens=sum(out[i].prompt_tokens for i in todo),  # type: ignore[union-attr]
                     completion_tokens=sum(out[i].completion_tokens for i in todo),  # type: ignore[union-attr]
                     forward_passes=sum(max(1, out[i].completion_tokens) for i in todo))  # type: ignore[union-attr]
        return out  # type: ignore[return-value]

    def stream(self, prompt: "Prompt | str", params: GenerationParams | None = None) -> Iterator[str]:
        """Generate one completion piece by piece: an iterator of text pieces whose
        concatenation is the completion :meth:`generate` would return for the same prompt
        and parameters. A backend that can stream (the local transformers backend) yields
        each new piece as soon as its token is decoded; others yield the whole text once
        (so a caller never needs to know which it got). The response cache and the cost
        record work as for :meth:`generate`; costs are charged when the iterator is
        exhausted (a caller that stops early is charged for nothing it did not read)."""
        self.require("generate", method="stream()")
        params = params or GenerationParams()
        p = as_prompt(prompt)
        key = self._key("generate", p, params.key(), 0)
        hit = self._cached(key, Completion.from_json)
        if hit is not None:
            self._charge_hits(1)
            if hit.text:
                yield hit.text
            return
        holder: list[Completion] = []
        for piece in self._stream(p, params, holder):
            if piece:
                yield piece
        if len(holder) != 1:
            raise RuntimeError(f"{type(self).__name__}._stream did not report its completion")
        c = holder[0]
        self._store(key, c.to_json())
        self._charge(calls=1, prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                     forward_passes=max(1, c.completion_tokens))

    def next_token_logprobs(self, prompts: Sequence["Prompt | str"], candidates: Sequence[str]) -> np.ndarray:
        """``(len(prompts), len(candidates))`` log-probabilities (over the whole
        vocabulary) that the next token is each candidate's first token. One forward
        pass per prompt. Candidates whose first tokens coincide get equal values — choose
        identifiers with distinct first tokens (:meth:`first_tokens_distinct`)."""
        self.require("next_token_logprobs", method="next_token_logprobs()")
        candidates = list(candidates)
        if not candidates:
            raise ConfigError("next_token_logprobs needs at least one candidate")
        return self._scored("next_token_logprobs", prompts, candidates)

    def continuation_logprobs(self, prompts: Sequence["Prompt | str"], continuations: Sequence[str]) -> np.ndarray:
        """``log P(continuations[i] | prompts[i])`` summed over the continuation's tokens,
        one forward pass per prompt (the continuation is teacher-forced)."""
        self.require("continuation_logprobs", method="continuation_logprobs()")
        if len(prompts) != len(continuations):
            raise ConfigError(f"{len(prompts)} prompts but {len(continuations)} continuations")
        ps = [as_prompt(p) for p in prompts]
        keys = [self._key("continuation", p, c) for p, c in zip(ps, continuations)]
        got = [self._cached(k, float) for k in keys]
        todo = [i for i, v in enumerate(got) if v is None]
        tokens = 0
        for start in range(0, len(todo), self.max_batch):
            chunk = todo[start:start + self.max_batch]
            scored = self._continuation_logprobs([ps[i] for i in chunk], [continuations[i] for i in chunk])
            for j, i in enumerate(chunk):
                got[i] = float(scored.values[j])
                self._store(keys[i], got[i])
            tokens += scored.prompt_tokens
        self._charge_hits(len(ps) - len(todo))
        self._charge(calls=len(todo), prompt_tokens=tokens, forward_passes=len(todo))
        return np.asarray(got, dtype=np.float64)

    def segment_attention(self, segments: Sequence[str], query_segment: int = -1) -> np.ndarray:
        """``(n_layers, len(segments))``: for each layer, the attention weights that the
        tokens of ``segments[query_segment]`` pay to the tokens of each segment, averaged
        over heads and summed over both token sets. ``segments`` concatenated are the
        model's whole input (render chat markup into the first and last segment yourself:
        :meth:`chat_frame`). One forward pass; not cached (it is cheap to ask twice and
        large to store)."""
        self.require("segment_attention", method="segment_attention()")
        if not segments:
            raise ConfigError("segment_attention needs at least one segment")
        if not -len(segments) <= query_segment < len(segments):
            raise ConfigError(f"query_segment {query_segment} is outside the {len(segments)} segments")
        scored = self._segment_attention(list(segments), query_segment % len(segments))
        self._charge(calls=1, prompt_tokens=scored.prompt_tokens, forward_passes=1)
        return scored.values

    def context_attention(self, context: Sequence[str], queries: Sequence[str]) -> list[list[np.ndarray]]:
        """Per-token attention that each query pays to a shared context, the way
        in-context reranking reads it: the model's input is ``context`` (segments, e.g.
        instruction + one per document) followed by ``queries[j]``; for every context
        segment the result holds one value per token — attention weights from the query's
        tokens, averaged over the query tokens, summed over heads and layers.

        ``result[j][i]`` is the ``(n_tokens_i,)`` array for query ``j`` and segment ``i``.
        The context is encoded once: the first query's forward pass keeps the context's
        key/value cache and each further query runs only its own tokens against it, so
        this costs exactly ``len(queries)`` forward passes. Not cached."""
        self.require("segment_attention", method="context_attention()")
        if not context or not queries:
            raise ConfigError("context_attention needs at least one context segment and one query")
        result, tokens = self._context_attention(list(context), list(queries))
        self._charge(calls=len(queries), prompt_tokens=tokens, forward_passes=len(queries))
        return result

    def chat_frame(self, system: str | None = None) -> tuple[str, str]:
        """The text a chat template puts before and after a user message's content
        (generation prompt included), so attention methods can place their segments
        inside a properly rendered chat turn. Backends without a template return
        ``("", "")``."""
        return "", ""

    def first_tokens_distinct(self, candidates: Sequence[str]) -> bool:
        """Whether every candidate starts with a different token (needed for
        :meth:`next_token_logprobs` to tell them apart). Backends that know their
        tokenizer override :meth:`first_token`."""
        firsts = [self.first_token(c) for c in candidates]
        return len(set(firsts)) == len(firsts)

    def first_token(self, text: str) -> Any:
        """The first token of ``text`` as the model would generate it (a token id where
        known, else the text up to the first non-alphanumeric boundary)."""
        return text[:1]

    # ------------------------------------------------------------------ for subclasses
    def _generate(self, prompts: list[Prompt], params: GenerationParams, top_logprobs: int) -> list[Completion]:
        raise CapabilityError(f"{type(self).__name__} does not implement generate")

    def _stream(self, prompt: Prompt, params: GenerationParams, holder: list[Completion]) -> Iterator[str]:
        """Yield the completion's text in pieces and append the finished
        :class:`Completion` to ``holder``. The default generates it whole (one piece)."""
        c = self._generate([prompt], params, 0)[0]
        holder.append(c)
        yield c.text

    def _next_token_logprobs(self, prompts: list[Prompt], candidates: list[str]) -> Scored:
        raise CapabilityError(f"{type(self).__name__} does not implement next_token_logprobs")

    def _continuation_logprobs(self, prompts: list[Prompt], continuations: list[str]) -> Scored:
        raise CapabilityError(f"{type(self).__name__} does not implement continuation_logprobs")

    def _segment_attention(self, segments: list[str], query_segment: int) -> Scored:
        raise CapabilityError(f"{type(self).__name__} does not implement segment_attention")

    def _context_attention(self, context: list[str], queries: list[str]) -> tuple[list[list[np.ndarray]], int]:
        raise CapabilityError(f"{type(self).__name__} does not implement context_attention")

    # ------------------------------------------------------------------ plumbing
    def _scored(self, what: str, prompts, candidates: list[str]) -> np.ndarray:
        ps = [as_prompt(p) for p in prompts]
        keys = [self._key(what, p, candidates) for p in ps]
        rows: list[Any] = [self._cached(k, lambda v: np.asarray(v, dtype=np.float64)) for k in keys]
        todo = [i for i, r in enumerate(rows) if r is None]
        tokens = 0
        for start in range(0, len(todo), self.max_batch):
            chunk = todo[start:start + self.max_batch]
            scored = self._next_token_logprobs([ps[i] for i in chunk], candidates)
            values = np.asarray(scored.values, dtype=np.float64)
            if values.shape != (len(chunk), len(candidates)):
                raise RuntimeError(f"{type(self).__name__} returned logprobs of shape {values.shape}, "
                                   f"expected {(len(chunk), len(candidates))}")
            for j, i in enumerate(chunk):
                rows[i] = values[j]
                self._store(keys[i], values[j].tolist())
            tokens += scored.prompt_tokens
        self._charge_hits(len(ps) - len(todo))
        self._charge(calls=len(todo), prompt_tokens=tokens, forward_passes=len(todo))
        return np.vstack(rows) if rows else np.zeros((0, len(candidates)))

    def _key(self, method: str, prompt: Prompt, *params: Any) -> str | None:
        if self.cache is None:
            return None
        return self.cache.key(self.identity, method, prompt.key(), list(params))

    def _cached(self, key: str | None, decode) -> Any:
        if key is None:
            return None
        value = self.cache.get(key)
        return None if value is None else decode(value)

    def _store(self, key: str | None, value: Any) -> None:
        if key is not None:
            self.cache.put(key, value)

    @staticmethod
    def _charge(**counts: int) -> None:
        from retrievo.pipeline import charge

        if any(counts.values()):
            charge(**counts)

    @staticmethod
    def _charge_hits(n: int) -> None:
        if n:
            from retrievo.pipeline import charge

            charge(cache_hits=n)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.identity!r}, capabilities={sorted(self.capabilities)})"


@dataclass
class ScriptedLLM(LLM):
    """A backend whose answers are functions you give it — for testing methods' mechanics
    (window order, permutation repair, aggregation) without a model, and for examples.

    ``generate_fn(prompt_text) -> str``, ``logprobs_fn(prompt_text, candidates) -> list``,
    ``continuation_fn(prompt_text, continuation) -> float``; ``prompt_text`` is the
    prompt's messages and assistant prefix joined by newlines. Token counts are the
    whitespace word counts, so costs are predictable in tests.
    """

    generate_fn: Any = None
    logprobs_fn: Any = None
    continuation_fn: Any = None
    context_length: int = 4096  # type: ignore[misc]
    name: str = "scripted"
    prompts_seen: list[str] = field(default_factory=list)

    def __post_init__(self):
        LLM.__init__(self, f"scripted:{self.name}")
        caps = {"count_tokens"}
        if self.generate_fn is not None:
            caps.add("generate")
        if self.logprobs_fn is not None:
            caps.add("next_token_logprobs")
        if self.continuation_fn is not None:
            caps.add("continuation_logprobs")
        self.capabilities = frozenset(caps)

    @staticmethod
    def text_of(prompt: Prompt) -> str:
        if prompt.is_raw:
            return prompt.raw_text or ""
        return "\n".join([m.content for m in prompt.messages] + ([prompt.assistant_prefix]
                                                                   if prompt.assistant_prefix else []))

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def prompt_tokens(self, prompt: "Prompt | str") -> int:
        return self.count_tokens(self.text_of(as_prompt(prompt)))

    def first_token(self, text: str) -> Any:
        return text.split()[0] if text.split() else ""

    def _generate(self, prompts, params, top_logprobs):
        out = []
        for p in prompts:
            text = self.text_of(p)
            self.prompts_seen.append(text)
            reply = str(self.generate_fn(text))
            out.append(Completion(reply, self.count_tokens(text), max(1, self.count_tokens(reply))))
        return out

    def _next_token_logprobs(self, prompts, candidates):
        rows, tokens = [], 0
        for p in prompts:
            text = self.text_of(p)
            self.prompts_seen.append(text)
            rows.append([float(v) for v in self.logprobs_fn(text, candidates)])
            tokens += self.count_tokens(text)
        return Scored(np.asarray(rows, dtype=np.float64), tokens)

    def _continuation_logprobs(self, prompts, continuations):
        vals, tokens = [], 0
        for p, c in zip(prompts, continuations):
            text = self.text_of(p)
            self.prompts_seen.append(text)
            vals.append(float(self.continuation_fn(text, c)))
            tokens += self.count_tokens(text) + self.count_tokens(c)
        return Scored(np.asarray(vals), tokens)

    def __hash__(self) -> int:
        return id(self)


__all__ = ["CAPABILITIES", "Completion", "GenerationParams", "LLM", "Message", "Prompt", "Scored", "ScriptedLLM",
           "as_prompt"]

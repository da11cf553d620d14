"""What the listwise rerankers share: the sliding window, the prompt, fitting it into the
model's context, and identifiers a model can tell apart in one token.

**Windows** (:func:`sliding_windows`) move from the back of the candidate list to the front,
as in RankGPT (Sun et al., 2023): the first window holds the last ``window`` candidates, each
next one ends ``stride`` places higher, and the last one starts at the top. Each window is
reordered by the model and the list is updated in place before the next window is built, so
a relevant passage found low down can travel up by ``window - stride`` places per step and
reach the top. ``window >= n`` is one window over everything (full ranking). A window of one
candidate asks nothing.

**Prompts** come from a template (:mod:`retrievo.llm.prompts`) with the placeholders
``{query}``, ``{num}`` (passages in the window) and ``{passages}``; the passage block is the
template's ``passage_line`` default (``"[{id}] {passage}"``) per passage, one per line.

**Budgets**: every passage is first truncated to ``max_passage_tokens``. If a window's
prompt plus the tokens the answer needs (a whole permutation for RankGPT, one token for
FIRST) exceeds the model's ``context_length``, the per-passage budget is lowered (binary
search for the largest that fits) — every candidate stays in the prompt, only shorter; if
even one token per passage does not fit, :class:`~retrievo.errors.ContextLengthError`.
Shortened prompts are counted as ``shortened_prompts`` in the cost record.

**Batching**: the queries of a batch move through their windows in lock step, so the model
gets the k-th window of every query in one call (a backend batches them, an HTTP backend
sends them concurrently); windows of one query stay strictly sequential.

Subclasses (:mod:`~retrievo.rerank.rankgpt`, :mod:`~retrievo.rerank.first`,
:mod:`~retrievo.rerank.full`) say how many candidates a window holds and how one step's
windows are ordered (:meth:`ListwiseReranker.rank_windows`).
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, ContextLengthError
from retrievo.llm.base import Prompt
from retrievo.llm.prompts import PromptTemplate, load_template
from retrievo.rerank.base import LLMReranker
from retrievo.types import Query, Rankings

#: placeholders every listwise template must have
REQUIRED = frozenset({"query", "num", "passages"})
DEFAULT_PASSAGE_LINE = "[{id}] {passage}"
#: identifiers FIRST may use, in order of preference (those whose first token collides are skipped)
ID_POOL = tuple(string.ascii_uppercase + string.ascii_lowercase + string.digits)


def check_window(window: int, stride: int) -> None:
    """Typed errors for a window the sliding driver cannot run."""
    for name, v in (("window", window), ("stride", stride)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"{name} must be a whole number, got {v!r}")
    if window < 2:
        raise ConfigError(f"window must be >= 2 passages, got {window}")
    if stride < 1:
        raise ConfigError(f"stride must be >= 1, got {stride}")
    if stride > window:
        raise ConfigError(f"stride ({stride}) must not exceed window ({window}): candidates between windows "
                          f"would never be reranked")


def sliding_windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each window over ``n`` candidates, in the order they are ranked:
    ends at ``n, n - stride, n - 2*stride, …``, each ``window`` long (the last clipped at
    0), stopping after the window that starts at the top."""
    if n <= 0:
        return []
    out = []
    end = n
    while True:
        start = max(0, end - window)
        out.append((start, end))
        if start == 0:
            return out
        end -= stride


@dataclass(frozen=True)
class Window:
    """One window to rank: the query and its passages in the current order."""

    query: str
    passages: list[str]


def passage_line(template: PromptTemplate) -> str:
    line = str(template.defaults.get("passage_line", DEFAULT_PASSAGE_LINE))
    if "{id}" not in line or "{passage}" not in line:
        raise ConfigError(f"prompt template {template.name!r}: passage_line must contain {{id}} and {{passage}}, "
                          f"got {line!r}")
    return line


def written_id(template: PromptTemplate) -> tuple[str, str]:
    """The text around an identifier as the template writes it: ``("[", "]")`` for
    ``"[{id}] {passage}"``."""
    head = passage_line(template).split("{passage}")[0].strip()
    before, _, after = head.partition("{id}")
    return before, after


def render(template: PromptTemplate, query: str, labels: Sequence[str], passages: Sequence[str],
           extra_prefix: str = "") -> Prompt:
    """The prompt for one window (``labels[i]`` identifies ``passages[i]``)."""
    line = passage_line(template)
    block = "\n".join(line.replace("{id}", label).replace("{passage}", " ".join(text.split()) or "(empty)")
                      for label, text in zip(labels, passages))
    prompt = template.render(query=" ".join(query.split()), num=len(passages), passages=block)
    if extra_prefix:
        prompt = dataclasses.replace(prompt, assistant_prefix=prompt.assistant_prefix + extra_prefix)
    return prompt


def fit_prompt(llm: Any, build: Callable[[list[str]], Prompt], passages: Sequence[str], budget: int,
               reserve: int) -> Prompt:
    """``build(passages)`` if it leaves ``reserve`` tokens of the context free; else the
    same prompt with every passage truncated to the largest budget below ``budget`` that
    fits (never dropping one), else :class:`ContextLengthError`."""
    limit = int(llm.context_length) - int(reserve)
    prompt = build(list(passages))
    if llm.prompt_tokens(prompt) <= limit:
        return prompt
    best: Prompt | None = None
    lo, hi = 1, max(1, budget - 1)
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = build([llm.truncate(p, mid) for p in passages])
        if llm.prompt_tokens(candidate) <= limit:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    if best is None:
        tokens = llm.prompt_tokens(build([llm.truncate(p, 1) for p in passages]))
        raise ContextLengthError(
            f"a listwise prompt for {len(passages)} passages needs {tokens} tokens even with one token per passage, "
            f"plus {reserve} for the answer; the model's context holds {llm.context_length}. Use a smaller window "
            f"or fewer candidates")
    from retrievo.pipeline import charge

    charge(shortened_prompts=1)
    return best


@dataclass
class ListwiseReranker(LLMReranker):
    """Base of the listwise rerankers: orders each query's candidates window by window
    (see the module docstring). Subclasses set :meth:`windows` and :meth:`rank_windows`."""

    #: template used when ``prompt`` is not a field of the subclass
    default_prompt = "rankgpt"

    def __post_init__(self):
        super().__post_init__()
        self._state["template"] = load_template(self.template_name, required=REQUIRED)
        passage_line(self._state["template"])

    @property
    def template_name(self) -> str:
        return str(getattr(self, "prompt", self.default_prompt))

    @property
    def template(self) -> PromptTemplate:
        if "template" not in self._state:
            self._state["template"] = load_template(self.template_name, required=REQUIRED)
        return self._state["template"]

    # ------------------------------------------------------------------ subclass hooks
    def windows(self, n: int) -> list[tuple[int, int]]:
        """The windows over ``n`` candidates, in the order they are ranked."""
        raise NotImplementedError

    def rank_windows(self, windows: list[Window]) -> list[list[int]]:
        """A permutation (best first) of each window's passages — one step of the driver,
        one window per query, asked of the model together."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the driver
    def order_all(self, queries: Sequence[Query], passages: Sequence[Sequence[str]]) -> list[list[int]]:
        """The final order of every query's candidates (positions into its list)."""
        texts = [self.truncated(p) if len(p) > 1 else list(p) for p in passages]
        orders = [list(range(len(p))) for p in passages]
        plans = [self.windows(len(p)) for p in passages]
        for step in range(max((len(p) for p in plans), default=0)):
            jobs, where = [], []
            for qi, plan in enumerate(plans):
                if step >= len(plan):
                    continue
                start, end = plan[step]
                if end - start < 2:
                    continue
                current = orders[qi][start:end]
                jobs.append(Window(queries[qi].text, [texts[qi][i] for i in current]))
                where.append((qi, start, end))
            if not jobs:
                continue
            perms = self.rank_windows(jobs)
            for (qi, start, end), perm in zip(where, perms, strict=True):
                current = orders[qi][start:end]
                if sorted(perm) != list(range(len(current))):
                    raise RuntimeError(f"{type(self).__name__}.rank_windows gave {perm}, not a permutation "
                                       f"of {len(current)}")
                orders[qi][start:end] = [current[j] for j in perm]
        return orders

    def order_list(self, query: Query, doc_ids: Sequence[str], passages: list[str]) -> list[int]:
        return self.order_all([query], [passages])[0]

    def transform(self, inp: Rankings) -> Rankings:
        ids = []
        for i in range(len(inp.queries)):
            lo, hi = int(inp.offsets[i]), int(inp.offsets[i + 1])
            ids.append([str(d) for d in inp.doc_ids[lo:hi]])
        queries = list(inp.queries)
        passages = [self.source.texts(d) if d else [] for d in ids]
        orders = self.order_all(queries, passages)
        lists = [([d[j] for j in order], np.arange(len(d), 0, -1, dtype=np.float64))
                 for d, order in zip(ids, orders)]
        return Rankings.from_lists(inp.queries, lists, costs=inp.costs)



@dataclass
class SlidingWindowReranker(ListwiseReranker):
    """A listwise reranker over windows of ``window`` candidates moving up by ``stride``
    (back to front); subclasses say how one window is ranked (:meth:`rank_windows`)."""

    window: int = 20
    stride: int = 10

    def __post_init__(self):
        check_window(self.window, self.stride)
        super().__post_init__()

    def windows(self, n: int) -> list[tuple[int, int]]:
        return sliding_windows(n, self.window, self.stride)

@dataclass(frozen=True)
class Identifiers:
    """Identifiers for a window whose first tokens differ in the model's tokenizer:
    ``labels`` as written in the prompt, ``candidates`` the strings whose first token is
    scored, ``prefix`` text forced into the reply before the identifier."""

    labels: tuple[str, ...]
    candidates: tuple[str, ...]
    prefix: str


def single_token_ids(llm: Any, template: PromptTemplate, n: int) -> Identifiers:
    """``n`` identifiers a model can name in its first token (FIRST).

    Letters ``A``…``Z``, then ``a``…``z``, then digits, skipping any whose first token is
    already taken by an earlier one or is just the opening bracket. Tried two ways: the
    whole written identifier (``[A]``, where the tokenizer has it as one token, e.g. Qwen2.5
    except ``[O]``/``[Q]``), else the bare letter after a forced ``[`` in the reply (for
    tokenizers that split ``[A]`` into ``[`` ``A`` ``]``, e.g. SmolLM2). Raises
    :class:`ConfigError` if neither gives ``n``."""
    before, after = written_id(template)
    ways = [("", lambda c: f"{before}{c}{after}", llm.first_token(before) if before else None)]
    if before:
        ways.append((before, lambda c: c, None))
    best = 0
    for prefix, as_candidate, forbidden in ways:
        labels, cands, taken = [], [], set()
        for c in ID_POOL:
            cand = as_candidate(c)
            tok = llm.first_token(cand)
            key = repr(tok)
            if tok == forbidden or key in taken or tok in ("", None):
                continue
            taken.add(key)
            labels.append(c)
            cands.append(cand)
            if len(labels) == n:
                return Identifiers(tuple(labels), tuple(cands), prefix)
        best = max(best, len(labels))
    raise ConfigError(f"the model's tokenizer gives only {best} identifiers with distinct first tokens, "
                      f"fewer than the {n} passages of a window; use a window of at most {best}")


__all__ = ["DEFAULT_PASSAGE_LINE", "ID_POOL", "REQUIRED", "Identifiers", "ListwiseReranker", "SlidingWindowReranker", "Window",
           "check_window", "fit_prompt", "render", "single_token_ids", "sliding_windows", "written_id"]

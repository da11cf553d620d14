"""Pairwise ranking prompting (PRP: Qin et al., 2023, "Large Language Models are Effective
Text Rankers with Pairwise Ranking Prompting").

The model sees the query and two passages and is asked which is more relevant ("Output
Passage A or Passage B"). Its answer is read, not generated: the ``prp`` template ends
with the assistant prefix ``"Passage"`` and one forward pass gives the log-probabilities
of the first tokens of ``answer_a`` (``" A"``) and ``answer_b`` (``" B"``) as the next token
(the template's ``[defaults]``; their first tokens must differ in the model's tokenizer,
checked once, else :class:`~retrievo.errors.ConfigError`).

**Both orders.** LLMs favour one position, so every pair ``(i, j)`` is asked twice, with
``i`` as passage A and then as passage B. In each order the passage whose label has the
higher log-probability wins that order (equal log-probabilities: nobody wins it). As in
the paper, ``i`` beats ``j`` only if it wins *both* orders; if the orders disagree the pair
is a tie, half a point each. A model that always answers "A" thus produces ties
everywhere, and the incoming order stands.

**Methods** (``method=``):

``allpairs``  every pair in both orders, ``n(n-1)`` prompts sent in one batched request;
              a candidate's score is its points (1 per win, 0.5 per tie), ties between
              scores broken by the incoming rank.
``sorting``   heap sort that settles the ``top_k`` best places (PRP-Sorting): a max-heap is
              built over all candidates and its root popped ``top_k`` times, O(n + k log n)
              comparisons. The comparator is "``i`` beats ``j``, or they tie and ``i`` came
              first in the incoming ranking". Comparisons are memoised, so no pair is
              asked twice; the candidates below ``top_k`` keep their incoming order.
``sliding``   ``top_k`` bubble-sort passes from the bottom of the list to the top
              (PRP-Sliding-K): pass ``p`` compares neighbours from the last position up
              to position ``p`` and moves a candidate up only when it beats its upper
              neighbour (a tie never swaps), so after ``p`` passes the top ``p`` places are
              settled. Memoised like sorting (a pair that meets again in a later pass is
              not asked again).

Prompts of one comparison (its two orders) go to the backend together; ``allpairs`` sends
all its prompts at once. Cost (charged by the backend): one LLM call and one forward pass
per prompt, i.e. two per compared pair. The output is an order (:meth:`order_list`), so
the scores are ``n - position``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrievo.errors import ConfigError
from retrievo.llm.prompts import PromptTemplate, load_template
from retrievo.rerank.base import LLMReranker
from retrievo.types import Query

METHODS = ("allpairs", "sorting", "sliding")
#: placeholders the PRP template must have
REQUIRED = frozenset({"query", "passage_a", "passage_b"})
#: the answers read when the template's [defaults] do not name them
DEFAULT_ANSWERS = (" A", " B")


class _Comparisons:
    """Pairwise outcomes for one query's candidates, asked lazily and remembered.

    ``outcome(i, j)`` is 1 if ``i`` beats ``j`` (wins both orders), 0 if ``j`` beats ``i``,
    0.5 for a tie; each unordered pair is asked (in both orders) at most once.
    """

    def __init__(self, stage: "PRP", query: Query, passages: Sequence[str]):
        self.stage, self.query, self.passages = stage, query, passages
        self.memo: dict[tuple[int, int], float] = {}
        self.asked = 0  # pairs sent to the model

    def prompts(self, i: int, j: int) -> list:
        """The two prompts of pair (i, j): i as passage A, then i as passage B."""
        render = self.stage.template.render
        q, pi, pj = self.query.text, self.passages[i], self.passages[j]
        return [render(query=q, passage_a=pi, passage_b=pj), render(query=q, passage_a=pj, passage_b=pi)]

    def ask(self, pairs: Sequence[tuple[int, int]]) -> None:
        """Ask every pair not yet known, in one batched request."""
        todo: list[tuple[int, int]] = []
        seen: set[tuple[int, int]] = set()
        for i, j in pairs:
            key = (min(i, j), max(i, j))
            if key not in self.memo and key not in seen and i != j:
                seen.add(key)
                todo.append(key)
        if not todo:
            return
        prompts = [p for i, j in todo for p in self.prompts(i, j)]
        lp = self.stage.llm.next_token_logprobs(prompts, self.stage.answers())
        self.asked += len(todo)
        for n, (i, j) in enumerate(todo):
            first, second = lp[2 * n], lp[2 * n + 1]
            # order 1: i is A; order 2: i is B
            i_wins_1, j_wins_1 = first[0] > first[1], first[1] > first[0]
            i_wins_2, j_wins_2 = second[1] > second[0], second[0] > second[1]
            if i_wins_1 and i_wins_2:
                self.memo[(i, j)] = 1.0
            elif j_wins_1 and j_wins_2:
                self.memo[(i, j)] = 0.0
            else:
                self.memo[(i, j)] = 0.5

    def outcome(self, i: int, j: int) -> float:
        """Points for ``i`` against ``j`` (1, 0.5 or 0)."""
        key = (min(i, j), max(i, j))
        if key not in self.memo:
            self.ask([key])
        value = self.memo[key]
        return value if i == key[0] else 1.0 - value

    def before(self, i: int, j: int) -> bool:
        """Whether ``i`` ranks above ``j``: it beats ``j``, or they tie and ``i`` came first."""
        o = self.outcome(i, j)
        return o == 1.0 or (o == 0.5 and i < j)


@dataclass
class PRP(LLMReranker):
    """``prp(model=smollm2, method=sorting, top_k=10, prompt=prp)`` — see the module docstring."""

    method: str = "sorting"
    top_k: int = 10
    prompt: str = "prp"
    name = "prp"

    def __post_init__(self):
        super().__post_init__()
        if self.method not in METHODS:
            raise ConfigError(f"prp: method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)) or self.top_k < 1:
            raise ConfigError(f"prp: top_k must be an integer >= 1, got {self.top_k!r}")
        template = load_template(self.prompt, required=REQUIRED)
        a = template.defaults.get("answer_a", DEFAULT_ANSWERS[0])
        b = template.defaults.get("answer_b", DEFAULT_ANSWERS[1])
        if not (isinstance(a, str) and isinstance(b, str) and a.strip() and b.strip() and a != b):
            raise ConfigError(f"prp: prompt template {template.name!r} names answers {a!r} and {b!r}; they must be "
                              "two different non-empty strings")
        self._state["template"] = template
        self._state["answers"] = [a, b]

    @property
    def template(self) -> PromptTemplate:
        return self._state["template"]

    def answers(self) -> list[str]:
        """The two answers whose next-token log-probabilities are compared, checked once
        per backend to start with different tokens."""
        llm = self.llm
        answers = self._state["answers"]
        if self._state.get("checked") is not llm:
            llm.require("next_token_logprobs", method="pairwise ranking prompting (prp)")
            if not llm.first_tokens_distinct(answers):
                raise ConfigError(f"prp: the answers {answers[0]!r} and {answers[1]!r} of template "
                                  f"{self.template.name!r} start with the same token in {llm.identity}; "
                                  "set answer_a / answer_b in the template's [defaults] to ones that do not")
            self._state["checked"] = llm
        return answers

    # ------------------------------------------------------------------ the three methods
    def order_list(self, query: Query, doc_ids: Sequence[str], passages: list[str]) -> list[int]:
        n = len(doc_ids)
        if n < 2:
            return list(range(n))
        self.answers()  # check before any prompt is built
        cmp = _Comparisons(self, query, self.truncated(passages))
        if self.method == "allpairs":
            return self._allpairs(cmp, n)
        if self.method == "sorting":
            return self._sorting(cmp, n)
        return self._sliding(cmp, n)

    @staticmethod
    def _allpairs(cmp: _Comparisons, n: int) -> list[int]:
        cmp.ask([(i, j) for i in range(n) for j in range(i + 1, n)])
        points = np.zeros(n)
        for (i, j), value in cmp.memo.items():
            points[i] += value
            points[j] += 1.0 - value
        return [int(i) for i in np.lexsort((np.arange(n), -points))]

    def _sorting(self, cmp: _Comparisons, n: int) -> list[int]:
        heap = list(range(n))  # a max-heap under cmp.before, as a list of candidate positions

        def sift_down(root: int, size: int) -> None:
            while True:
                best, left, right = root, 2 * root + 1, 2 * root + 2
                if left < size and cmp.before(heap[left], heap[best]):
                    best = left
                if right < size and cmp.before(heap[right], heap[best]):
                    best = right
                if best == root:
                    return
                heap[root], heap[best] = heap[best], heap[root]
                root = best

        for root in range(n // 2 - 1, -1, -1):
            sift_down(root, n)
        top: list[int] = []
        size = n
        while size and len(top) < self.top_k:
            top.append(heap[0])
            size -= 1
            heap[0] = heap[size]
            sift_down(0, size)
        chosen = set(top)
        return top + [i for i in range(n) if i not in chosen]

    def _sliding(self, cmp: _Comparisons, n: int) -> list[int]:
        order = list(range(n))
        for p in range(min(self.top_k, n - 1)):
            for pos in range(n - 1, p, -1):
                if cmp.outcome(order[pos], order[pos - 1]) == 1.0:
                    order[pos - 1], order[pos] = order[pos], order[pos - 1]
        return order


__all__ = ["METHODS", "PRP"]

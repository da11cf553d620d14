"""RankGPT (Sun et al., 2023): the model reads a window of passages and writes their
identifiers, most relevant first (``[3] > [1] > [2]``); windows slide from the back of the
list to the front (:mod:`retrievo.rerank.listwise`).

Identifiers are RankGPT's numbers ``[1]`` … ``[window]`` (generation spells them out, so they
need not be single tokens). The model generates greedily, with room for the whole
permutation of the window (the tokens of ``[1] > [2] > … > [w]`` plus a margin); its answer
is read and repaired by :func:`~retrievo.rerank.permutation.parse_permutation` — invalid and
repeated identifiers dropped, missing passages appended in their incoming order — so a
malformed answer never fails a run, and the repairs are counted in the cost record.

Cost: one LLM call per window, prefill plus one forward pass per generated token.
Output scores are positions (``n`` for the top, ``1`` for the last), not probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrievo.llm.base import GenerationParams
from retrievo.rerank.listwise import ListwiseReranker, SlidingWindowReranker, Window, fit_prompt, render
from retrievo.rerank.permutation import charge_repairs, numeric_labels, parse_permutation

#: generated tokens allowed beyond the permutation itself (a closing word, an end marker)
ANSWER_MARGIN = 4


def answer_budget(llm, labels) -> int:
    """Tokens the answer may take: the whole permutation written out, plus a margin."""
    return llm.count_tokens(" > ".join(f"[{label}]" for label in labels)) + ANSWER_MARGIN


def rank_by_generation(stage: ListwiseReranker, windows: list[Window]) -> list[list[int]]:
    """One generated permutation per window (one batched call for all of them)."""
    llm = stage.llm
    llm.require("generate", method=f"{stage.name} (listwise generation)")
    labels_of = [numeric_labels(len(w.passages)) for w in windows]
    budget = max(answer_budget(llm, labels) for labels in labels_of)
    prompts = [fit_prompt(llm, lambda ps, q=w.query, lb=labels: render(stage.template, q, lb, ps),
                          w.passages, stage.max_passage_tokens, budget)
               for w, labels in zip(windows, labels_of)]
    answers = llm.generate(prompts, GenerationParams(max_tokens=budget, temperature=0.0))
    out = []
    for answer, labels in zip(answers, labels_of, strict=True):
        perm = parse_permutation(answer.text, labels)
        charge_repairs(perm)
        out.append(list(perm.order))
    return out


@dataclass
class RankGPT(SlidingWindowReranker):
    """Listwise reranking by generated permutations over a sliding window (see the module
    docstring): ``bm25 % 100 >> rankgpt(window=20, stride=10)``."""

    prompt: str = "rankgpt"

    name = "rankgpt"

    def rank_windows(self, windows: list[Window]) -> list[list[int]]:
        return rank_by_generation(self, windows)


__all__ = ["RankGPT", "answer_budget", "rank_by_generation"]

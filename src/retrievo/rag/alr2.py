"""Retrieve-then-reason (ALR², Li et al. 2024, as a prompting method): first extract the
relevant sentences, by id, then answer only from them.

Step 1 shows the passages (deduplicated, truncated, budgeted as ``read`` does) with every
sentence labelled ``[n.m]`` (passage ``n``, sentence ``m``) and asks for the ids of the
sentences needed to answer — nothing else. Ids that name no shown sentence are dropped
(counted as ``invalid_sentence_ids``). Step 2 answers with the read prompt over *only the
extracted sentences*, grouped under their passage's marker ``[n]`` (kept from step 1), so
the answer's citations still map to the passages' document ids.

No sentence extracted means the model found no evidence: the empty-context policy applies
(``on_empty``: abstain, or answer closed-book). Sentences are split at ``.``, ``!`` or
``?`` followed by white space and an upper-case letter or digit — the corpus's own
sentence boundaries are not kept in the document store.

Cost: two LLM calls per query (one when nothing is extracted and the policy abstains).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from retrievo.pipeline import charge
from retrievo.rag.base import LLMReader, Passage, Reading, question_text
from retrievo.types import Answers, Rankings

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")
_SENTENCE_ID = re.compile(r"(\d+)\s*\.\s*(\d+)")


def sentences(text: str) -> list[str]:
    """``text`` split into sentences (see the module docstring)."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def parse_sentence_ids(reply: str, shown: dict[tuple[int, int], str]) -> tuple[list[tuple[int, int]], int]:
    """The ``(n, m)`` ids in ``reply`` that name shown sentences (each once, in order), and
    the number that name none."""
    got: list[tuple[int, int]] = []
    invalid = 0
    for a, b in _SENTENCE_ID.findall(reply):
        key = (int(a), int(b))
        if key not in shown:
            invalid += 1
        elif key not in got:
            got.append(key)
    return got, invalid


@dataclass
class ALR2(LLMReader):
    """``alr2(k=5, max_passage_tokens=128)``."""

    name = "alr2"

    def __post_init__(self):
        super().__post_init__()
        from retrievo.llm.prompts import load_template

        self._state["extract"] = load_template("alr2_extract", required={"passages", "question"})

    def extract_prompt(self, question: str, passages: list[Passage]):
        t = self._state["extract"]
        line = t.defaults.get("sentence_line", "[{n}.{m}] {sentence}")
        shown: dict[tuple[int, int], str] = {}
        blocks = []
        for p in passages:
            lines = []
            for m, s in enumerate(sentences(p.text), 1):
                shown[(p.n, m)] = s
                lines.append(line.format(n=p.n, m=m, sentence=s))
            blocks.append("\n".join(lines))
        return t.render(passages="\n\n".join(blocks), question=question), shown

    def reason(self, question: str, passages: list[Passage]) -> Reading:
        if not passages:
            return self.read(question, [])
        prompt, shown = self.extract_prompt(question, passages)
        reply = self.ask(prompt, max_tokens=max(16, int(self.max_tokens)))
        if reply is None:
            return Reading(self.abstain, [], passages)
        ids, invalid = parse_sentence_ids(reply, shown)
        if invalid:
            charge(invalid_sentence_ids=invalid)
        charge(extracted_sentences=len(ids))
        evidence = []
        for p in passages:
            kept = [shown[(n, m)] for n, m in sorted(ids) if n == p.n]
            if kept:
                evidence.append(Passage(p.n, p.doc_id, " ".join(kept), p.rank, p.score))
        reading = self.read(question, evidence)
        return Reading(reading.text, reading.citations, passages)

    def transform(self, inp: Rankings) -> Answers:
        texts, cites = [], []
        for i, query in enumerate(inp.queries):
            lo, hi = int(inp.offsets[i]), int(inp.offsets[i + 1])
            q = question_text(query)
            r = self.reason(q, self.context(q, inp.doc_ids[lo:hi].tolist(), inp.scores[lo:hi].tolist()))
            texts.append(r.text)
            cites.append(r.citations)
        return Answers.from_lists(inp.queries, texts, cites, contexts=inp, costs=inp.costs)


__all__ = ["ALR2", "parse_sentence_ids", "sentences"]

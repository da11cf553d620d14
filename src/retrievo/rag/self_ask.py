"""Multi-hop decomposition, self-ask style (Press et al., 2023), each hop retrieved and read.

For each question the model is asked, given the follow-up questions answered so far,
either for one more follow-up question (``Follow up: …``) or for the final answer
(``So the final answer is: …``). Each follow-up question is retrieved with the
``retriever`` sub-pipeline and answered from its passages by the reader (with citations,
as ``read`` does). When the model stops asking, or after ``max_hops`` follow-ups, a
composition prompt answers the question from the intermediate answers.

The first ``min_hops`` hops (default 1) are *forced*: the model's reply is primed with
the template's ``follow_prefix`` (``Follow up:``), so it can only write a follow-up
question. Self-ask's few-shot prompts always decompose at least once; retrievo's
template has no worked example (small models copy examples verbatim), and without the
primer SmolLM2-135M answered every hand-written two-hop question directly and never
decomposed at all. ``min_hops=0`` leaves every hop to the model.

A reply that is neither form is read as a follow-up question when it is a question not
yet asked (small models often drop the label), else as the end of decomposition; a
repeated follow-up question (or one that repeats the question itself, as
Qwen2.5-Coder-0.5B often does) also ends it, and so does an empty forced reply. The final answer cites the passages the
intermediate answers cited — all among the passages retrieved for this question, which
form the answer's ``contexts`` (hop by hop, first retrieval first, each id once).

Cost: per hop one decomposition call and one read call, plus one composition call (the
model's own ``So the final answer is`` is not trusted over the composition: it is written
without the evidence in view). ``hops`` in the cost record counts follow-up questions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from retrievo.errors import ConfigError
from retrievo.pipeline import charge
from retrievo.rag.base import (LLMReader, Reading, answers_from, check_count, check_retriever, clean_answer,
                               question_text, ranked, run_sub, with_retriever)
from retrievo.types import Answers, Queries, Rankings

_FOLLOW = re.compile(r"follow[- ]?up(?: question)?\s*:\s*(.+)", re.I)
_FINAL = re.compile(r"(?:so )?the final answer is\s*:?\s*(.*)", re.I)


def parse_step(reply: str) -> tuple[str, str]:
    """``("follow", question)``, ``("final", answer)`` or ``("none", "")`` for a
    decomposition reply (see the module docstring)."""
    for line in reply.splitlines():
        line = line.strip()
        if not line:
            continue
        m = _FOLLOW.search(line)
        if m and m.group(1).strip():
            return "follow", m.group(1).strip()
        m = _FINAL.search(line)
        if m:
            return "final", clean_answer(m.group(1))
        if line.endswith("?"):
            return "follow", line
        return "none", ""
    return "none", ""


def forced_step(reply: str) -> tuple[str, str]:
    """The follow-up question a primed reply (it starts after ``Follow up:``) holds: its
    first non-empty line, a repeated label removed; ``("none", "")`` when empty."""
    for line in reply.splitlines():
        line = line.strip()
        if line:
            m = _FOLLOW.search(line)
            text = (m.group(1) if m else line).strip()
            final = _FINAL.search(text)  # "<question>? So the final answer is: …" keeps the question
            text = text[:final.start()].strip() if final else text
            return ("follow", text) if text else ("none", "")
    return "none", ""


@dataclass
class SelfAsk(LLMReader):
    """``self_ask(retriever=bm25 % 3, max_hops=2, min_hops=1, k=3)``."""

    retriever: Any = None
    max_hops: int = 2
    min_hops: int = 1
    name = "self_ask"
    takes = (Queries,)

    def __post_init__(self):
        super().__post_init__()
        check_retriever(self.retriever, "self_ask", "self_ask(bm25 % 3)")
        check_count(self.max_hops, "self_ask", "max_hops")
        check_count(self.min_hops, "self_ask", "min_hops", minimum=0)
        if int(self.min_hops) > int(self.max_hops):
            raise ConfigError(f"self_ask: min_hops ({self.min_hops}) cannot exceed max_hops ({self.max_hops})")
        from retrievo.llm.prompts import load_template

        self._state["ask"] = load_template("self_ask", required={"question", "steps"})
        self._state["compose"] = load_template("compose", required={"question", "steps"})

    @classmethod
    def from_options(cls, ctx, index=None, retriever=None, **options):
        return with_retriever(cls, ctx, index, retriever, options)

    def _steps(self, template, steps: list[tuple[str, str]]) -> str:
        line = template.defaults.get("step_line", "{sub_question} {sub_answer}")
        return "\n".join(line.format(sub_question=q, sub_answer=a) for q, a in steps)

    def _one(self, qid: str, question: str) -> tuple[Reading, list[tuple[str, float]]]:
        steps: list[tuple[str, str]] = []
        cited: list[str] = []
        seen: dict[str, float] = {}
        ask = self._state["ask"]
        forced = ask.with_prefix(ask.defaults.get("follow_prefix", "Follow up:"))
        for hop in range(int(self.max_hops)):
            template = forced if hop < int(self.min_hops) else ask
            reply = self.ask(template.render(question=question, steps=self._steps(ask, steps)),
                             max_tokens=max(16, int(self.max_tokens)))
            kind, text = forced_step(reply or "") if template is forced else parse_step(reply or "")
            if kind != "follow" or text.lower() in {q.lower() for q, _ in steps} | {question.lower()}:
                break
            charge(hops=1)
            got = run_sub(self.retriever, Queries([qid], [text]))
            ids, scores = ranked(got, 0)
            for d, s in zip(ids, scores):
                seen.setdefault(d, s)
            sub = self.read(text, self.context(text, ids, scores))
            steps.append((text, sub.text))
            cited.extend(d for d in sub.citations if d not in cited)
        if not steps:  # no decomposition: one retrieval with the question itself, then read
            got = run_sub(self.retriever, Queries([qid], [question]))
            ids, scores = ranked(got, 0)
            seen.update(zip(ids, scores))
            return self.read(question, self.context(question, ids, scores)), list(seen.items())
        reply = self.ask(self._state["compose"].render(question=question,
                                                        steps=self._steps(self._state["compose"], steps)))
        text = self.abstain if reply is None else clean_answer(reply)
        return Reading(text, [] if text == self.abstain else cited, []), list(seen.items())

    def transform(self, inp: Queries) -> Answers:
        readings, lists = [], []
        for q in inp:
            r, seen = self._one(q.qid, question_text(q))
            readings.append(r)
            lists.append(([d for d, _ in seen], [float(len(seen) - i) for i in range(len(seen))]))
        return answers_from(inp, readings, Rankings.from_lists(inp, lists), inp.costs)


__all__ = ["SelfAsk", "forced_step", "parse_step"]

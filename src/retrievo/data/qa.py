"""Question-answering datasets: ``qa.jsonl``-style files beside a BEIR folder.

One JSON object per line with a question id (``_id``, ``id`` or ``qid``), the question
(``question``, ``query`` or ``text``), the gold answers (``answers``: a list, or ``answer``:
one string) and optionally the gold evidence documents (``gold_doc_ids``); any other field
(HotpotQA's ``type``, ``level``, …) is kept in the query's meta. The corpus the evidence
ids point into is the BEIR folder's ``corpus.jsonl`` (``../shared/data/hotpotqa`` holds
both). Lines are read in file order, so ``limit=N`` is always the same first N questions.
A line that is not JSON, lacks a field, or repeats an id is a
:class:`~retrievo.errors.DataFormatError` naming the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from retrievo.errors import DataFormatError, DuplicateIdError, MissingFieldError
from retrievo.types import Qrels, Queries

QA_FILE = "qa.jsonl"


@dataclass(frozen=True)
class QADataset:
    """Questions (as :class:`Queries`), their gold answers and gold evidence ids."""

    queries: Queries
    answers: dict[str, list[str]]
    evidence: dict[str, list[str]]
    path: str = ""

    def __len__(self) -> int:
        return len(self.queries)

    def qrels(self) -> Qrels:
        """The gold evidence as relevance judgments (relevance 1), for ranking metrics."""
        return Qrels.from_dict({q: {d: 1 for d in docs} for q, docs in self.evidence.items() if docs})

    def head(self, n: int) -> "QADataset":
        """The first ``n`` questions in file order (a fixed subset, never chosen by results)."""
        keep = list(self.queries.ids[:n])
        return QADataset(self.queries.subset(keep), {q: self.answers[q] for q in keep},
                         {q: self.evidence[q] for q in keep if q in self.evidence}, self.path)


def _first(obj: dict, names: tuple[str, ...]):
    return next((obj[n] for n in names if n in obj), None)


def load_qa(path: str | Path, limit: int | None = None) -> QADataset:
    """Read a ``qa.jsonl`` file, or the ``qa.jsonl`` inside a folder (see the module docstring)."""
    p = Path(path)
    if p.is_dir():
        p = p / QA_FILE
    if not p.is_file():
        raise DataFormatError(f"no QA file at {p}: expected a {QA_FILE} (question, answers, gold_doc_ids per line)")
    ids, texts, metas = [], [], []
    answers: dict[str, list[str]] = {}
    evidence: dict[str, list[str]] = {}
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if limit is not None and len(ids) >= limit:
                break
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataFormatError(f"{p}:{n}: not JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataFormatError(f"{p}:{n}: expected a JSON object")
            qid = _first(obj, ("_id", "id", "qid"))
            question = _first(obj, ("question", "query", "text"))
            gold = obj.get("answers", obj.get("answer"))
            if qid is None or question is None or gold is None:
                raise MissingFieldError(f"{p}:{n}: a QA line needs an id (_id), a question and answers")
            gold = [gold] if isinstance(gold, str) else [str(g) for g in gold]
            if not gold:
                raise DataFormatError(f"{p}:{n}: question {qid!r} has no gold answer")
            qid = str(qid)
            if qid in answers:
                raise DuplicateIdError(f"{p}:{n}: question id {qid!r} appears more than once")
            ids.append(qid)
            texts.append(str(question))
            answers[qid] = gold
            docs = obj.get("gold_doc_ids")
            if docs:
                evidence[qid] = [str(d) for d in docs]
            metas.append({k: v for k, v in obj.items() if isinstance(v, (str, int, float, bool))
                          and k not in ("_id", "id", "qid", "question", "query", "text", "answer")})
    return QADataset(Queries(ids, texts, metas), answers, evidence, str(p))


__all__ = ["QA_FILE", "QADataset", "load_qa"]

"""Question-answering metrics: answer EM/F1/accuracy, evidence retrieval, citations, and
paired comparisons of answer pipelines.

**Answers.** :func:`normalize_answer` is the normalisation of the official SQuAD v1.1 and
HotpotQA evaluation scripts: lower-case, drop punctuation, drop the articles *a*, *an*,
*the*, collapse white space. :func:`exact_match` compares normalised strings;
:func:`f1_score` is the token-level F1 of the HotpotQA script, including its rule that a
*yes*, *no* or *noanswer* on either side scores 0 unless both sides are equal (so "yes" vs
"yes it is" is 0, not 0.67). With several gold answers the best one counts (SQuAD).
:func:`accuracy` is 1 when a normalised gold answer is contained in the normalised
prediction (the lenient "cover EM" of open-domain QA papers).

**Evidence** over the list a reader received (:attr:`Answers.contexts`): Hits@k (a gold
document in the top k), Recall@k (share of the gold documents in the top k) and MRR@k.
A closed-book answer has no list: its evidence values are missing (NaN), not zero.

**Citations**: precision — the share of cited documents that support the answer; recall —
the share of the gold supporting documents that are cited. "Supports" means *is a gold
evidence document* (HotpotQA's two supporting paragraphs) when the dataset lists them,
else *contains a gold answer string* (pass the passages' text). Precision is undefined
(NaN) for an answer that cites nothing and is averaged over the answers that cite.

Aggregates skip NaN values; per-query arrays keep them, so paired tests pair only
queries where both systems have a value.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrievo.errors import EvaluationError
from retrievo.types import Answers, Rankings

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
_SPECIAL = ("yes", "no", "noanswer")


def normalize_answer(s: str) -> str:
    """Lower text and remove punctuation, articles and extra white space (official)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _f1_one(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction), normalize_answer(gold)
    if pred in _SPECIAL and pred != ref:
        return 0.0
    if ref in _SPECIAL and pred != ref:
        return 0.0
    p_tokens, g_tokens = pred.split(), ref.split()
    common = Counter(p_tokens) & Counter(g_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p_tokens), same / len(g_tokens)
    return 2 * precision * recall / (precision + recall)


def _golds(golds: str | Sequence[str]) -> list[str]:
    out = [golds] if isinstance(golds, str) else list(golds)
    if not out:
        raise EvaluationError("a question needs at least one gold answer")
    return out


def exact_match(prediction: str, golds: str | Sequence[str]) -> float:
    return float(any(normalize_answer(prediction) == normalize_answer(g) for g in _golds(golds)))


def f1_score(prediction: str, golds: str | Sequence[str]) -> float:
    return max(_f1_one(prediction, g) for g in _golds(golds))


def accuracy(prediction: str, golds: str | Sequence[str]) -> float:
    pred = normalize_answer(prediction)
    return float(any(normalize_answer(g) and normalize_answer(g) in pred for g in _golds(golds)))


def evidence_at_k(ranked: Sequence[str] | None, gold: Sequence[str], k: int) -> tuple[float, float, float]:
    """(Hits@k, Recall@k, MRR@k) of one ranked list against the gold documents; NaN
    when there is no list or no gold document."""
    if ranked is None or not gold:
        return math.nan, math.nan, math.nan
    top = list(ranked)[:k]
    gold_set = set(gold)
    found = [d for d in top if d in gold_set]
    first = next((i for i, d in enumerate(top) if d in gold_set), None)
    return float(bool(found)), len(set(found)) / len(gold_set), 0.0 if first is None else 1.0 / (first + 1)


def citation_scores(cited: Sequence[str], gold: Sequence[str],
                    supports: Callable[[str], bool] | None = None) -> tuple[float, float]:
    """(precision, recall) of one answer's citations (see the module docstring)."""
    supported = supports if supports is not None else (lambda d: d in set(gold))
    precision = math.nan if not cited else sum(1 for d in cited if supported(d)) / len(cited)
    recall = math.nan if not gold else len(set(cited) & set(gold)) / len(set(gold))
    return precision, recall


@dataclass
class QAReport:
    """Per-query values (``per_query[metric]``, query order) and their means."""

    qids: list[str]
    per_query: dict[str, np.ndarray]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for name, values in self.per_query.items():
            ok = values[~np.isnan(values)]
            out[name] = float(ok.mean()) if len(ok) else None
        return out


def evaluate_answers(answers: Answers, golds: Mapping[str, Sequence[str]],
                     evidence: Mapping[str, Sequence[str]] | None = None, ks: Sequence[int] = (5, 10),
                     passages: Mapping[str, str] | None = None) -> QAReport:
    """EM, F1, accuracy, evidence Hits/R/MRR@k and citation precision/recall per query.

    ``golds``: ``{qid: [answers]}``; ``evidence``: ``{qid: [gold doc ids]}`` (optional);
    ``passages``: ``{doc_id: text}``, used to judge citations by answer containment when
    no gold evidence is given."""
    qids = list(answers.queries.ids)
    missing = [q for q in qids if q not in golds]
    if missing:
        raise EvaluationError(f"{len(missing)} answered queries have no gold answer, e.g. {missing[0]!r}")
    cols: dict[str, list[float]] = {"EM": [], "F1": [], "accuracy": []}
    for k in ks:
        for m in ("evidence_Hits", "evidence_R", "evidence_MRR"):
            cols[f"{m}@{k}"] = []
    cols["citation_precision"], cols["citation_recall"] = [], []
    contexts: Rankings | None = answers.contexts
    for i, a in enumerate(answers):
        gold_answers = _golds(golds[a.qid])
        cols["EM"].append(exact_match(a.text, gold_answers))
        cols["F1"].append(f1_score(a.text, gold_answers))
        cols["accuracy"].append(accuracy(a.text, gold_answers))
        gold_docs = list(evidence.get(a.qid, ())) if evidence is not None else []
        ranked = None
        if contexts is not None:
            lo, hi = int(contexts.offsets[i]), int(contexts.offsets[i + 1])
            ranked = contexts.doc_ids[lo:hi].tolist()
        for k in ks:
            h, r, m = evidence_at_k(ranked, gold_docs, k)
            cols[f"evidence_Hits@{k}"].append(h)
            cols[f"evidence_R@{k}"].append(r)
            cols[f"evidence_MRR@{k}"].append(m)
        supports = None
        if not gold_docs and passages is not None:
            norm_golds = [normalize_answer(g) for g in gold_answers]
            supports = lambda d: any(g and g in normalize_answer(passages.get(d, "")) for g in norm_golds)  # noqa: E731
        p, r = citation_scores(list(a.citations), gold_docs, supports)
        cols["citation_precision"].append(p)
        cols["citation_recall"].append(r)
    return QAReport(qids, {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()})


def llm_judge(answers: Answers, golds: Mapping[str, Sequence[str]], llm: Any,
              template: str = "answer_judge") -> np.ndarray:
    """Optional LLM-as-judge correctness, 1.0 or 0.0 per answer: the model is asked whether
    the prediction means the same as (any) gold answer and its first word is read (yes /
    no; anything else counts as no). ``llm`` is a backend from
    :func:`retrievo.llm.load.load_llm`. A judge is itself a model with its own errors:
    report it beside EM/F1, never instead of them."""
    from retrievo.llm.base import GenerationParams
    from retrievo.llm.prompts import load_template

    t = load_template(template, required={"question", "gold", "prediction"})
    prompts = [t.render(question=a_q.text, gold=" / ".join(_golds(golds[a.qid])), prediction=a.text)
               for a, a_q in zip(answers, answers.queries)]
    replies = llm.generate(prompts, GenerationParams(max_tokens=3)) if prompts else []
    return np.asarray([1.0 if c.text.strip().lower().startswith("yes") else 0.0 for c in replies])


@dataclass
class AnswerComparison:
    """Means per system and paired tests of each system against the baseline."""

    systems: list[str]
    metrics: list[str]
    reports: dict[str, QAReport]
    tests: dict[str, dict[str, Any]]
    baseline: str

    def to_markdown(self, digits: int = 4) -> str:
        head = "| system | " + " | ".join(self.metrics) + " |"
        lines = [head, "|" + "---|" * (len(self.metrics) + 1)]
        for s in self.systems:
            cells = []
            for m in self.metrics:
                v = self.reports[s].metrics.get(m)
                cell = "–" if v is None else f"{v:.{digits}f}"
                t = self.tests.get(s, {}).get(m)
                if t is not None and not math.isnan(t["p_adjusted"]) and t["p_adjusted"] < 0.05:
                    cell += "*"
                cells.append(cell)
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append(f"\n\\* p < 0.05 against {self.baseline} (paired test, corrected for the comparisons).")
        return "\n".join(lines)


def compare_answers(systems: Mapping[str, Answers], golds: Mapping[str, Sequence[str]],
                    evidence: Mapping[str, Sequence[str]] | None = None, metrics: Sequence[str] = ("EM", "F1"),
                    baseline: str | None = None, test: str = "t", correction: str = "holm") -> AnswerComparison:
    """Compare answer pipelines' outputs on the same questions with the paired tests and
    corrections that :class:`~retrievo.evaluate.Experiment` uses for rankings (the first
    system is the baseline unless named)."""
    from retrievo.evaluate.significance import correct, paired_test

    names = list(systems)
    if not names:
        raise EvaluationError("compare_answers needs at least one system")
    baseline = baseline or names[0]
    if baseline not in systems:
        raise EvaluationError(f"baseline {baseline!r} is not one of the systems")
    reports = {n: evaluate_answers(a, golds, evidence) for n, a in systems.items()}
    base = reports[baseline]
    tests: dict[str, dict[str, Any]] = {}
    for m in metrics:
        family = []
        for n in names:
            if n == baseline:
                continue
            if reports[n].qids != base.qids:
                raise EvaluationError(f"{n!r} answered other questions than {baseline!r}")
            a, b = reports[n].per_query[m], base.per_query[m]
            both = ~(np.isnan(a) | np.isnan(b))
            family.append((n, paired_test(a[both], b[both], test=test)))
        adjusted = correct([r.pvalue for _, r in family], correction) if family else []
        for (n, r), p in zip(family, adjusted):
            tests.setdefault(n, {})[m] = {"statistic": r.statistic, "pvalue": r.pvalue, "p_adjusted": float(p),
                                          "mean_diff": r.mean_diff, "n": r.n}
    return AnswerComparison(names, list(metrics), reports, tests, baseline)


__all__ = ["AnswerComparison", "QAReport", "accuracy", "citation_scores", "compare_answers", "evaluate_answers",
           "evidence_at_k", "exact_match", "f1_score", "llm_judge", "normalize_answer"]

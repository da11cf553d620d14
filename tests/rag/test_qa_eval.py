"""QA evaluation: answer normalisation and EM/F1 equal the official HotpotQA script, the
evidence and citation metrics, the qa.jsonl loader, answer-pipeline comparison with
significance tests, and the ``rag-eval`` / ``ask`` commands (scripted backend, tiny data).

The reference below re-implements ``hotpot_evaluate_v1.py`` (Yang et al., 2018; its
``normalize_answer`` is SQuAD v1.1's) from its published definition: lower-case, strip
punctuation, replace the articles a/an/the by a space, collapse white space; F1 over
tokens with a zero score when either side is yes/no/noanswer and the two differ."""

from __future__ import annotations

import json
import math
import random
import re
import string
from collections import Counter

import numpy as np
import pytest

from retrievo.data.qa import load_qa
from retrievo.errors import DataFormatError, DuplicateIdError, EvaluationError, MissingFieldError
from retrievo.evaluate.qa import (accuracy, citation_scores, compare_answers, evaluate_answers, evidence_at_k,
                                  exact_match, f1_score, normalize_answer)
from retrievo.types import Answers, Queries, Rankings


# --- the official script's logic, written out as published -------------------------------------
def ref_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def ref_f1(prediction, ground_truth):
    p, g = ref_normalize(prediction), ref_normalize(ground_truth)
    if p in ["yes", "no", "noanswer"] and p != g:
        return 0
    if g in ["yes", "no", "noanswer"] and p != g:
        return 0
    pt, gt = p.split(), g.split()
    common = Counter(pt) & Counter(gt)
    same = sum(common.values())
    if same == 0:
        return 0
    precision, recall = 1.0 * same / len(pt), 1.0 * same / len(gt)
    return (2 * precision * recall) / (precision + recall)


def ref_em(prediction, ground_truth):
    return ref_normalize(prediction) == ref_normalize(ground_truth)


KNOWN = [  # (prediction, gold, EM, F1) computed by hand from the definition
    ("The Eiffel Tower", "eiffel tower", 1.0, 1.0),
    ("Eiffel Tower, Paris.", "the Eiffel Tower", 0.0, 0.8),
    ("yes", "yes", 1.0, 1.0),
    ("yes it is", "yes", 0.0, 0.0),  # the yes/no rule: not 0.5
    ("no", "yes", 0.0, 0.0),
    ("an apple a day", "apple day", 1.0, 1.0),
    ("October 1922", "October 1922", 1.0, 1.0),
    ("in October, 1922", "October 1922", 0.0, 0.8),
    ("", "Paris", 0.0, 0.0),
    ("the the the", "", 1.0, 0.0),
    ("Paris Paris", "Paris", 0.0, 2 / 3),
]


@pytest.mark.parametrize("pred, gold, em, f1", KNOWN)
def test_known_cases(pred, gold, em, f1):
    assert exact_match(pred, gold) == em == float(ref_em(pred, gold))
    assert f1_score(pred, gold) == pytest.approx(f1) == pytest.approx(ref_f1(pred, gold))


def test_equals_the_reference_on_random_strings():
    rng = random.Random(3)
    words = ["the", "a", "an", "Paris", "paris", "yes", "no", "noanswer", "1922", "U.S.", "it's", "--", "Seine,",
             "The", "Tower", "tower!", " ", "an-apple"]
    for _ in range(2000):
        p = " ".join(rng.choice(words) for _ in range(rng.randint(0, 5)))
        g = " ".join(rng.choice(words) for _ in range(rng.randint(0, 4)))
        assert normalize_answer(p) == ref_normalize(p)
        assert exact_match(p, g) == float(ref_em(p, g))
        assert f1_score(p, g) == pytest.approx(ref_f1(p, g))


def test_several_golds_take_the_best_and_accuracy_is_containment():
    assert f1_score("Paris France", ["Lyon", "Paris"]) == pytest.approx(2 / 3)
    assert exact_match("paris", ["Lyon", "Paris"]) == 1.0
    assert accuracy("It is the city of Paris.", ["Paris"]) == 1.0
    assert accuracy("Lyon", ["Paris"]) == 0.0
    with pytest.raises(EvaluationError):
        f1_score("x", [])


def test_evidence_and_citation_metrics():
    assert evidence_at_k(["a", "g1", "b", "g2"], ["g1", "g2"], 2) == (1.0, 0.5, 0.5)
    assert evidence_at_k(["a", "g1", "b", "g2"], ["g1", "g2"], 10) == (1.0, 1.0, 0.5)
    assert evidence_at_k(["a"], ["g1"], 5) == (0.0, 0.0, 0.0)
    assert all(math.isnan(v) for v in evidence_at_k(None, ["g1"], 5))
    p, r = citation_scores(["g1", "x"], ["g1", "g2"])
    assert (p, r) == (0.5, 0.5)
    p, r = citation_scores([], ["g1"])
    assert math.isnan(p) and r == 0.0


def answers_for(texts, cites, ranked):
    qs = Queries.of({f"q{i}": f"question {i}" for i in range(len(texts))})
    ctx = Rankings.from_lists(qs, [(r, np.arange(len(r), 0, -1, dtype=float)) for r in ranked])
    return Answers.from_lists(qs, texts, cites, contexts=ctx)


def test_evaluate_answers_aggregates_and_skips_undefined_values():
    golds = {"q0": ["Paris"], "q1": ["yes"]}
    evidence = {"q0": ["g1", "g2"], "q1": ["g3", "g4"]}
    a = answers_for(["Paris", "no"], [["g1"], []], [["g1", "x", "g2"], ["x", "y"]])
    rep = evaluate_answers(a, golds, evidence)
    m = rep.metrics
    assert m["EM"] == 0.5 and m["F1"] == 0.5
    assert m["evidence_R@5"] == 0.5 and m["evidence_Hits@5"] == 0.5
    assert m["citation_precision"] == 1.0  # only q0 cites; q1's precision is undefined, not 0
    assert m["citation_recall"] == 0.25
    closed = Answers.from_lists(a.queries, ["Paris", "yes"], [[], []])
    assert evaluate_answers(closed, golds, evidence).metrics["evidence_R@10"] is None
    # without gold evidence, a citation supports when its passage contains a gold answer
    rep2 = evaluate_answers(a, golds, None, passages={"g1": "Paris is large"})
    assert rep2.metrics["citation_precision"] == 1.0
    with pytest.raises(EvaluationError):
        evaluate_answers(a, {"q0": ["Paris"]}, evidence)


def test_compare_answers_runs_paired_tests_against_the_baseline():
    n = 30
    golds = {f"q{i}": ["Paris"] for i in range(n)}
    qs = Queries.of({f"q{i}": "question" for i in range(n)})
    good = Answers.from_lists(qs, ["Paris"] * n, [[] for _ in range(n)])
    bad = Answers.from_lists(qs, ["Lyon"] * (n - 2) + ["Paris"] * 2, [[] for _ in range(n)])
    same = Answers.from_lists(qs, ["Lyon"] * (n - 2) + ["Paris"] * 2, [[] for _ in range(n)])
    cmp = compare_answers({"closed": bad, "rag": good, "same": same}, golds, metrics=("EM", "F1"))
    assert cmp.tests["rag"]["EM"]["p_adjusted"] < 0.001 and cmp.tests["rag"]["EM"]["mean_diff"] > 0.9
    assert cmp.tests["same"]["EM"]["pvalue"] == 1.0
    table = cmp.to_markdown()
    assert "| rag | 1.0000* | 1.0000* |" in table and "| closed |" in table


# --- the loader ------------------------------------------------------------------------------------
def test_load_qa_reads_fields_in_file_order(tmp_path):
    lines = [{"_id": "a", "question": "Q1?", "answers": ["x"], "gold_doc_ids": ["d1", "d2"], "type": "bridge"},
             {"id": "b", "query": "Q2?", "answer": "y"}]
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    qa = load_qa(tmp_path)
    assert qa.queries.ids == ("a", "b") and qa.answers == {"a": ["x"], "b": ["y"]}
    assert qa.evidence == {"a": ["d1", "d2"]} and qa.queries[0].meta["type"] == "bridge"
    assert qa.qrels().for_query("a") == {"d1": 1, "d2": 1}
    assert load_qa(tmp_path, limit=1).queries.ids == ("a",) and qa.head(1).queries.ids == ("a",)


@pytest.mark.parametrize("content, error", [
    ('{"_id": "a", "question": "q"}\n', MissingFieldError),
    ("not json\n", DataFormatError),
    ('{"_id": "a", "question": "q", "answers": []}\n', DataFormatError),
    ('{"_id": "a", "question": "q", "answers": ["x"]}\n{"_id": "a", "question": "r", "answers": ["y"]}\n',
     DuplicateIdError),
])
def test_load_qa_bad_lines_are_typed_errors(tmp_path, content, error):
    (tmp_path / "qa.jsonl").write_text(content)
    with pytest.raises(error):
        load_qa(tmp_path)
    with pytest.raises(DataFormatError):
        load_qa(tmp_path / "missing")


def test_the_shared_hotpotqa_file_loads(shared_data):
    qa = load_qa(shared_data / "hotpotqa")
    assert len(qa) == 600 and all(len(qa.evidence[q]) == 2 for q in qa.queries.ids)
    assert qa.answers["5abf63f15542997ec76fd3ea"] == ["October 1922"]

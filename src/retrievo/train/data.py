"""Training material from judgments: which queries train and which select the model, what
each query's candidates are, and which negatives each training list contrasts its
positive with.

**Splits.** The queries of the training split that have at least one positive judgment
are divided *by query* into train and dev (:func:`carve_dev`): a seeded permutation of
the sorted query ids, the first ``dev_fraction`` of it to dev. Model selection (which
checkpoint to keep, a fusion weight) looks at dev only; the dataset's test split is never
read by a trainer.

**Candidates.** Any first-stage pipeline spec (``bm25`` by default; ``bm25 + dense``,
``splade``...) runs over the training queries, cut to ``depth``; self-hits (a document
whose id is the query's, BEIR's convention) are dropped. Negatives are drawn from these
lists, so they are the documents the trained reranker will actually meet.

**Negatives.** A :class:`NegativePlan` reads ``top20:3,top100:2,random:2``: 3 negatives
from ranks 1–20, 2 from ranks 21–100, 2 from anywhere in the corpus. Tiers are
consecutive rank bands, hardest first; documents judged relevant are never negatives.
Each epoch draws fresh negatives and a fresh order (one seeded generator), so every
list of the whole run is fixed before training starts: the run is reproducible, and an
interrupted run that resumes sees exactly the lists it would have seen.

**Curriculum** (``curriculum=True``, easy → hard): at progress ``p`` through the run
(0 at the first list, 1 at the last), negatives whose tier is harder than the hardest
tier then allowed come from that tier instead. With tiers ``top20, top100, random``: the
first third of the run draws every negative at random, the second third from ranks
21–100 or at random, the last third follows the plan.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, EmptyTrainingSetError
from retrievo.types import Queries

DEFAULT_NEGATIVES = "top20:3,top100:2,random:2"
_TIER = re.compile(r"^(?:top(\d+)|random):(\d+)$")


@dataclass(frozen=True)
class Tier:
    """Negatives drawn from ranks ``[lo, hi)`` of the candidates (``hi=None``: anywhere
    in the corpus)."""

    lo: int
    hi: int | None
    count: int

    def __str__(self) -> str:
        return f"{'random' if self.hi is None else f'top{self.hi}'}:{self.count}"


@dataclass(frozen=True)
class NegativePlan:
    """How many negatives each list draws from which rank band, hardest band first."""

    tiers: tuple[Tier, ...]

    @classmethod
    def parse(cls, text: str) -> NegativePlan:
        """From ``top20:3,top100:2,random:2`` (bands by increasing depth, ``random`` last)."""
        tiers: list[Tier] = []
        lo = 0
        for part in filter(None, (p.strip() for p in str(text).split(","))):
            m = _TIER.match(part)
            if not m:
                raise ConfigError(f"negatives: {part!r} is not topN:COUNT or random:COUNT (e.g. {DEFAULT_NEGATIVES})")
            count = int(m.group(2))
            if tiers and tiers[-1].hi is None:
                raise ConfigError(f"negatives: 'random' must come last in {text!r}")
            if m.group(1) is None:
                tiers.append(Tier(0, None, count))
                continue
            hi = int(m.group(1))
            if hi <= lo:
                raise ConfigError(f"negatives: band top{hi} must go deeper than the band before it (rank {lo}) "
                                  f"in {text!r}")
            tiers.append(Tier(lo, hi, count))
            lo = hi
        if not tiers or sum(t.count for t in tiers) < 1:
            raise ConfigError(f"negatives: {text!r} asks for no negative; a list needs at least one")
        return cls(tuple(tiers))

    @property
    def depth(self) -> int:
        """How deep the first stage must rank for the bands (at least 1)."""
        return max([t.hi for t in self.tiers if t.hi is not None] or [1])

    @property
    def per_list(self) -> int:
        return sum(t.count for t in self.tiers)

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.tiers)


@dataclass
class Judgments:
    """The judged queries of one split, their positives, and the files they came from."""

    queries: Queries
    positives: dict[str, list[str]]
    files: dict[str, str] = field(default_factory=dict)

    def subset(self, qids: Sequence[str]) -> Judgments:
        return Judgments(self.queries.subset(qids), {q: self.positives[q] for q in qids}, dict(self.files))


def load_judgments(data_dir: str | os.PathLike, split: str = "train") -> Judgments:
    """Queries of ``split`` with at least one positive judgment (relevance > 0), from a
    BEIR folder; raises :class:`EmptyTrainingSetError` when there is none."""
    from retrievo.data.beir import BeirDataset

    data = BeirDataset(data_dir)
    qrels = data.qrels(split)
    positives: dict[str, list[str]] = {}
    for q, d, r in zip(qrels.qids.tolist(), qrels.doc_ids.tolist(), qrels.relevance.tolist()):
        if r > 0:
            positives.setdefault(str(q), []).append(str(d))
    queries = data.queries()
    have = [q for q in queries.ids if q in positives]
    if not have:
        raise EmptyTrainingSetError(f"{data_dir}: split {split!r} has no query with a positive judgment "
                                    "(relevance > 0) and text in queries.jsonl: nothing to train on")
    files = {"corpus": str(data.corpus.path), "queries": str(Path(data_dir) / "queries.jsonl"),
             "qrels": str(data._qrels_file(split))}
    return Judgments(queries.subset(have), {q: positives[q] for q in have}, files)


def carve_dev(qids: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Split query ids into (train, dev): a permutation of the sorted ids seeded by
    ``seed``, the first ``round(fraction * n)`` to dev (at least one when ``fraction`` > 0),
    both returned in sorted order. Deterministic for the same ids, fraction and seed."""
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"dev fraction must be in [0, 1), got {fraction}")
    ids = sorted(set(qids))
    n_dev = 0 if fraction == 0 else max(1, int(round(fraction * len(ids))))
    if n_dev >= len(ids):
        raise EmptyTrainingSetError(f"a dev fraction of {fraction} leaves none of the {len(ids)} judged queries "
                                    "to train on")
    order = np.random.default_rng(seed).permutation(len(ids))
    dev = {ids[i] for i in order[:n_dev]}
    return [q for q in ids if q not in dev], [q for q in ids if q in dev]


def mine_candidates(index: Any, queries: Queries, first_stage: str = "bm25", depth: int = 100,
                    progress: bool = True) -> dict[str, list[str]]:
    """Each query's top ``depth`` documents under the first-stage pipeline ``first_stage``
    (any spec the registry parses), self-hits dropped: ``{qid: [doc ids, best first]}``."""
    return {q: ids for q, (ids, _) in mine_scored(index, queries, first_stage, depth, progress).items()}


def mine_scored(index: Any, queries: Queries, first_stage: str = "bm25", depth: int = 100,
                progress: bool = True) -> dict[str, tuple[list[str], list[float]]]:
    """:func:`mine_candidates` with the first stage's scores: ``{qid: (doc ids, scores)}``."""
    from retrievo.pipeline import parse

    if depth < 1:
        raise ConfigError(f"candidate depth must be >= 1, got {depth}")
    stage = parse(f"({first_stage}) % {int(depth) + 1}", {"index": index})
    out: dict[str, tuple[list[str], list[float]]] = {}
    batch = 256
    chunks = [queries.subset(queries.ids[i:i + batch]) for i in range(0, len(queries), batch)]
    for chunk in _bar(chunks, progress, f"mining candidates ({first_stage})"):
        for ranked in stage(chunk).drop_self_hits():
            out[ranked.qid] = ([str(d) for d in ranked.doc_ids.tolist()[:depth]],
                               [float(x) for x in ranked.scores.tolist()[:depth]])
    return out


def teacher_values(ids: Sequence[str], scores: Sequence[float], docs: Sequence[str]) -> list[float]:
    """The first stage's opinion of ``docs`` for one query, on a scale shared by queries:
    each score standardised over the query's candidates (mean 0, deviation 1). A document
    outside the candidates ranked below all of them, so it gets the lowest candidate's
    value (its own score is at most that); with no spread, every value is 0."""
    if not ids:
        return [0.0] * len(docs)
    values = np.asarray(scores, dtype=np.float64)
    spread = float(values.std())
    z = (values - values.mean()) / spread if spread > 0 else np.zeros_like(values)
    by_id = dict(zip(ids, z.tolist()))
    floor = float(z.min())
    return [by_id.get(d, floor) for d in docs]


@dataclass(frozen=True)
class TrainingList:
    """One query, one positive, and the negatives it is contrasted with."""

    qid: str
    positive: str
    negatives: tuple[str, ...]


def build_lists(judgments: Judgments, candidates: Mapping[str, Sequence[str]], all_doc_ids: Sequence[str],
                plan: NegativePlan, epochs: int, seed: int, curriculum: bool = False) -> list[TrainingList]:
    """Every list of the run, in training order: per epoch, one list per (query, positive)
    pair, shuffled, with freshly drawn negatives (see the module docstring). Raises
    :class:`EmptyTrainingSetError` when no list can be made."""
    if epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {epochs}")
    rng = np.random.default_rng(seed)
    pairs = [(q, p) for q in judgments.queries.ids for p in judgments.positives[q]]
    if not pairs:
        raise EmptyTrainingSetError("no (query, positive document) pair to train on")
    all_ids = list(all_doc_ids)
    total = len(pairs) * epochs
    out: list[TrainingList] = []
    for _epoch in range(epochs):
        for i in rng.permutation(len(pairs)).tolist():
            qid, pos = pairs[i]
            progress = len(out) / max(1, total - 1)
            negs = _draw(rng, plan, candidates.get(qid, ()), set(judgments.positives[qid]), all_ids,
                         progress if curriculum else None)
            if negs:
                out.append(TrainingList(qid, pos, tuple(negs)))
    if not out:
        raise EmptyTrainingSetError("no training list has a negative: the candidates hold only relevant "
                                    "documents and the corpus has no other document to draw")
    return out


def _draw(rng: np.random.Generator, plan: NegativePlan, ranked: Sequence[str], relevant: set[str],
          all_ids: Sequence[str], progress: float | None) -> list[str]:
    tiers = plan.tiers
    allowed = 0 if progress is None else min(len(tiers) - 1, int((1.0 - progress) * len(tiers)))
    chosen: list[str] = []
    taken = set(relevant)
    for t, tier in enumerate(tiers):
        source = tiers[max(t, allowed)]
        if source.hi is None:
            chosen += _random(rng, all_ids, taken, tier.count)
        else:
            band = [d for d in ranked[source.lo:source.hi] if d not in taken]
            picks = rng.choice(len(band), size=min(tier.count, len(band)), replace=False).tolist() if band else []
            chosen += [band[j] for j in sorted(picks)]
        taken.update(chosen)
    return chosen


def _random(rng: np.random.Generator, all_ids: Sequence[str], taken: set[str], count: int) -> list[str]:
    out: list[str] = []
    tries = 0
    while len(out) < count and tries < 20 * count + 20 and all_ids:
        d = all_ids[int(rng.integers(len(all_ids)))]
        tries += 1
        if d not in taken and d not in out:
            out.append(d)
    return out


def passages(index: Any, doc_ids: Sequence[str]) -> dict[str, str]:
    """``{doc id: "title: text"}`` from the index's document store, as rerankers read them."""
    from retrievo.llm.prompts import passage_text

    ids = list(dict.fromkeys(doc_ids))
    out: dict[str, str] = {}
    for i in range(0, len(ids), 1024):
        for d in index.documents(ids[i:i + 1024]):
            out[d.doc_id] = passage_text(d.title, d.text)
    return out


def open_index(data_dir: str | os.PathLike, index: Any = None, progress: bool = True) -> Any:
    """The index the first stage searches: ``index`` if given (an open index, or an index
    folder), else the dataset indexed in memory (with stored documents, so passages can be
    read)."""
    from retrievo.workflows import load_index

    if index is not None and not isinstance(index, (str, os.PathLike)):
        return index

    return load_index(index if index is not None else data_dir, progress=progress)


@dataclass
class Prepared:
    """Everything a trainer reads from the data: the train and dev judgments, each
    query's first-stage candidates, every document id, and the files' identity."""

    train: Judgments
    dev: Judgments | None
    candidates: dict[str, list[str]]
    index: Any
    doc_ids: list[str]
    first_stage: str
    data_dir: str
    split: str
    scores: dict[str, list[float]] = field(default_factory=dict)  # the candidates' first-stage scores

    def teacher(self, qid: str, docs: Sequence[str]) -> list[float]:
        """:func:`teacher_values` of ``docs`` for query ``qid``."""
        return teacher_values(self.candidates.get(qid, []), self.scores.get(qid, []), docs)

    def passages(self, doc_ids: Sequence[str]) -> dict[str, str]:
        return passages(self.index, doc_ids)

    def identity(self) -> dict[str, Any]:
        """The data part of a training plan: files hashed, split, queries per side."""
        from retrievo.train.manifest import data_identity

        return {"dir": os.path.abspath(self.data_dir), "split": self.split,
                "files": data_identity(self.train.files), "first_stage": self.first_stage,
                "train_queries": len(self.train.queries), "dev_queries": 0 if self.dev is None else len(self.dev.queries)}


def prepare(data_dir: str | os.PathLike, split: str = "train", *, first_stage: str = "bm25", depth: int = 100,
            dev_fraction: float = 0.1, dev_seed: int = 0, index: Any = None,
            progress: bool = True) -> Prepared:
    """Load the split's judgments, carve the dev split off by query, open (or build) the
    index and mine every query's candidates to ``depth``."""
    judged = load_judgments(data_dir, split)
    train_ids, dev_ids = carve_dev(judged.queries.ids, dev_fraction, dev_seed)
    idx = open_index(data_dir, index, progress=progress)
    mined = mine_scored(idx, judged.queries, first_stage, depth, progress=progress)
    live = idx.live
    ids = [str(d) for d in (idx.doc_ids if live is None else idx.doc_ids[live]).tolist()]
    return Prepared(judged.subset(train_ids), judged.subset(dev_ids) if dev_ids else None,
                    {q: c for q, (c, _) in mined.items()}, idx, ids, first_stage, str(data_dir), split,
                    {q: s for q, (_, s) in mined.items()})


def _bar(items: Sequence[Any], enabled: bool, desc: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="batch")


__all__ = ["DEFAULT_NEGATIVES", "Judgments", "NegativePlan", "Tier", "TrainingList", "build_lists", "carve_dev",
           "load_judgments", "mine_candidates", "mine_scored", "open_index", "passages", "Prepared", "prepare",
           "teacher_values"]

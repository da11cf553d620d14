"""Multi-field BM25: BM25F and per-field BM25 combined by weights.

Documents have named fields (``title``, ``text``, text-valued metadata such as
``abstract``) kept as separate postings (``InvertedIndex.build(fields=...)``, see
:mod:`retrievo.index.inverted`). Two ways to score them:

``combine="bm25f"`` — Robertson & Zaragoza's BM25F ("The Probabilistic Relevance
Framework: BM25 and Beyond", 2009, §3.6): each field's term frequency is normalised by
its own length and weighted, *then* saturated once::

    tf~(t, d) = sum_f  w_f * tf(t, f, d) / B_f(d),     B_f(d) = (1 - b_f) + b_f * len_f(d) / avglen_f
    score(q, d) = sum_{t in q}  idf(t) * tf~ / (k1 + tf~)

with ``idf(t) = log(1 + (N - df + 0.5) / (df + 0.5))`` (Lucene's), ``df`` the documents
containing ``t`` in any of the scored fields and ``N`` the documents with text in one of
them. Saturating after the sum is the point of BM25F: a term repeated in the title and
the body does not earn two saturated contributions, which per-field BM25 gives it.

``combine="sum"`` — per-field BM25, each field with its own statistics (``df``, ``N`` and
average length of that field), summed with the weights: ``sum_f w_f * BM25_f(q, d)``.

Both follow Lucene's per-field conventions so that one field scores exactly like
``bm25``: lengths are Lucene's one-byte norms (``SmallFloat.intToByte4``), ``avglen_f``
averages over the live documents that have the field, the saturation is computed as
``idf - idf / (1 + tf * (w_f / (k1 * B_f)))`` in float32 (Lucene's rewrite of
``idf * tf~ / (k1 + tf~)``), and query terms repeated in the query weigh once per
occurrence. So ``bm25f(text=1)`` over a corpus without titles returns ``bm25``'s ranking
and scores (tests/test_bm25f.py), whichever combination is chosen.

An index built without separate field postings still works: the fields are analysed
from its stored documents on first use (in memory, once per index version), so
``bm25f`` runs on any index with a document store; building with ``fields=`` stores them
and skips that step. Filters (``filter=``) apply before top-k selection, as in ``bm25``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from retrievo.errors import ConfigError, EmptyQueryError
from retrievo.index.inverted import InvertedIndex
from retrievo.retrieve.bm25 import idf_weights, lucene_encode_lengths, lucene_length_table
from retrievo.retrieve.first_stage import DEFAULT_K, FirstStage, check_at_least, rank_candidates
from retrievo.types import Queries, Rankings

DEFAULT_WEIGHTS = {"title": 1.0, "text": 1.0}
DEFAULT_B = 0.4
COMBINE = ("bm25f", "sum")


@dataclass
class FieldPostings:
    """Per field, the postings of every segment (global document numbers) and lengths."""

    names: tuple[str, ...]
    vocab: Mapping[str, int]
    segments: list[list[Any]]  # segments[j][s]: field j's Segment of index segment s
    bases: np.ndarray
    lengths: list[np.ndarray]  # lengths[j]: int64 per global document number

    def postings(self, j: int, term: int) -> tuple[np.ndarray, np.ndarray]:
        docs, tfs = [], []
        for seg, base in zip(self.segments[j], self.bases[:-1]):
            d, t = seg.postings(term)
            if len(d):
                docs.append(np.asarray(d, dtype=np.int64) + int(base))
                tfs.append(np.asarray(t))
        if not docs:
            return np.empty(0, np.int64), np.empty(0, np.int32)
        return np.concatenate(docs), np.concatenate(tfs)


def field_postings(index: InvertedIndex, names: Sequence[str]) -> FieldPostings:
    """The postings of ``names``: stored ones when the index was built with them, else
    analysed from the stored documents now (cached on the index until it changes)."""
    names = tuple(names)
    stored = index.fields
    if all(n in stored for n in names):
        segs = [[fs[stored.index(n)] for fs in index.field_segments] for n in names]
        return FieldPostings(names, index.vocab, segs, index.bases,
                             [_lengths(s, index) for s in segs])
    if not index.store:
        raise ConfigError(f"fields {[n for n in names if n not in stored]} are not indexed separately "
                          f"(this index keeps {list(stored) or 'no fields'}) and it stores no text to analyse "
                          "them from; rebuild it with fields=... (retrievo index --fields title,text)")
    return index._cached(f"bm25f-fields:{','.join(names)}", lambda: _derive(index, names))


def _lengths(segments: Sequence[Any], index: InvertedIndex) -> np.ndarray:
    if not segments:
        return np.empty(0, np.int64)
    return np.concatenate([np.asarray(s.doclen, dtype=np.int64) for s in segments])


def _derive(index: InvertedIndex, names: tuple[str, ...]) -> FieldPostings:
    from retrievo.index.ingest import SegmentBuilder, analyse_batch, growing_vocab

    vocab = growing_vocab(index.vocab)
    per_field: list[list[Any]] = [[] for _ in names]
    for s, part in enumerate(index.doc_parts):
        builder = SegmentBuilder(vocab, store=False, fields=names)
        tuples = []
        for local in range(part.n_docs):
            doc = part.document(local)
            tuples.append((doc.doc_id, doc.title, doc.text, dict(doc.meta) if doc.meta else None))
        for a in range(0, len(tuples), 1000):
            builder.add(analyse_batch(index.analyzer, tuples[a:a + 1000], False, names))
        _, _, fsegs = builder.build(f"derived{s}")
        for j, seg in enumerate(fsegs):
            per_field[j].append(seg)
    return FieldPostings(names, dict(vocab), per_field, index.bases,
                         [_lengths(s, index) for s in per_field])


@dataclass(eq=False)
class BM25F(FirstStage):
    """BM25F or per-field BM25 over the named fields of an :class:`InvertedIndex`.

    ``weights`` maps field names to weights (default title=1, text=1), ``b`` maps field
    names to their length normalisation (default 0.4 each). Takes queries (retrieval) or
    rankings (scores the candidates only)."""

    index: InvertedIndex
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    b: Mapping[str, float] = field(default_factory=dict)
    k1: float = 0.9
    combine: str = "bm25f"
    k: int = DEFAULT_K
    filter: str | None = None
    _state: dict[str, Any] = field(default_factory=dict, repr=False)
    name = "bm25f"
    takes = (Queries, Rankings)

    def __post_init__(self):
        if not isinstance(self.index, InvertedIndex) or getattr(self.index, "FORMAT", None) != "retrievo-inverted":
            raise ConfigError(f"bm25f needs a lexical InvertedIndex, got {type(self.index).__name__}")
        self.weights = {str(f): float(w) for f, w in dict(self.weights).items()}
        self.b = {str(f): float(v) for f, v in dict(self.b).items()}
        if not self.weights:
            raise ConfigError("bm25f needs at least one field weight, e.g. bm25f(title=2, text=1)")
        bad = {f: w for f, w in self.weights.items() if not (np.isfinite(w) and w >= 0)}
        if bad or not any(w > 0 for w in self.weights.values()):
            raise ConfigError(f"field weights must be finite, >= 0 and not all 0, got {self.weights}")
        unknown_b = sorted(set(self.b) - set(self.weights))
        if unknown_b:
            raise ConfigError(f"b given for field(s) {unknown_b} that have no weight; add e.g. "
                              f"{unknown_b[0]}=1.0, or drop b_{unknown_b[0]}")
        if any(not 0 <= v <= 1 for v in self.b.values()):
            raise ConfigError(f"per-field b must be in [0, 1], got {self.b}")
        if not self.k1 > 0:
            raise ConfigError(f"k1 must be > 0 for bm25f, got {self.k1}")
        if self.combine not in COMBINE:
            raise ConfigError(f"combine must be one of {', '.join(COMBINE)}, got {self.combine!r}")
        check_at_least(1, k=self.k)
        if self.filter is not None:
            self.index.filter_mask(self.filter)
        self._arrays()

    @classmethod
    def from_options(cls, ctx: Mapping[str, Any], index: InvertedIndex | None = None, **options: Any) -> "BM25F":
        """Registry factory: ``bm25f(title=2.0, text=1.0, b_title=0.5)`` — every option
        that is not a named one is a field weight, or a field's ``b`` when it starts with
        ``b_``."""
        index = index if index is not None else ctx.get("index")
        if index is None:
            raise ConfigError("the bm25f stage needs an index: name one (bm25f(index='sf.idx')), or pass "
                              "ctx={'index': ...}")
        named = {key: options.pop(key) for key in ("k1", "combine", "k", "filter") if key in options}
        b = {key[2:]: float(options.pop(key)) for key in list(options) if key.startswith("b_")}
        weights = {key: float(value) for key, value in options.items()} or dict(DEFAULT_WEIGHTS)
        return cls(index, weights, b, **named)

    # ------------------------------------------------------------------ statistics
    def _arrays(self) -> dict[str, Any]:
        key = self._index_key()
        st = self._state
        if st.get("key") == key:
            return st
        index = self.index
        names = tuple(self.weights)
        fp = field_postings(index, names)
        live = index.live
        n_docs = index.total_docs
        table = lucene_length_table()
        k1 = np.float32(self.k1)
        inv, counts = [], []
        for j, name in enumerate(names):
            lengths = fp.lengths[j]
            alive = lengths if live is None else lengths[live]
            n_f = int((alive > 0).sum())
            counts.append(n_f)
            avg = np.float32(alive.sum() / n_f) if n_f else np.float32(1.0)
            b = np.float32(self.b.get(name, DEFAULT_B))
            with np.errstate(divide="ignore"):  # b=1 and length 0: a document without the field (no posting reads it)
                cache = (np.float32(1) / (k1 * ((np.float32(1) - b) + b * table / avg))).astype(np.float32)
            per_doc = cache[lucene_encode_lengths(lengths)]
            if self.combine == "bm25f":  # the weight goes inside the saturation
                per_doc = (per_doc * np.float32(self.weights[name])).astype(np.float32)
            inv.append(per_doc)
        total = np.sum(fp.lengths, axis=0) if names else np.zeros(n_docs, np.int64)
        any_field = int(((total if live is None else total[live]) > 0).sum())
        st.clear()
        st.update(key=key, fp=fp, inv=inv, field_docs=counts, n_any=any_field, live=live,
                  id_rank=index.id_rank, ids=index.doc_ids, n_docs=n_docs)
        return st

    def _term_scores(self, st: dict[str, Any], tid: int) -> tuple[np.ndarray, np.ndarray]:
        """(documents, float32 scores) of one query term, deleted documents included."""
        fp, live = st["fp"], st["live"]
        names = fp.names
        if self.combine == "bm25f":
            docs_parts, vals = [], []
            for j in range(len(names)):
                d, tf = fp.postings(j, tid)
                if len(d):
                    docs_parts.append(d)
                    vals.append(tf.astype(np.float32) * st["inv"][j][d])
            if not docs_parts:
                return np.empty(0, np.int64), np.empty(0, np.float32)
            if len(docs_parts) == 1:  # one field holds the term: no summation, exact float32
                docs, acc = docs_parts[0], vals[0]
            else:  # field contributions of a document summed in double, then float32
                docs, where = np.unique(np.concatenate(docs_parts), return_inverse=True)
                acc = np.bincount(where, weights=np.concatenate(vals).astype(np.float64)).astype(np.float32)
            df = len(docs) if live is None else int(live[docs].sum())
            idf = idf_weights(np.array([df]), st["n_any"], "lucene")[0]
            return docs, (idf - idf / (np.float32(1) + acc)).astype(np.float32)
        docs_parts, vals = [], []
        for j, name in enumerate(names):
            d, tf = fp.postings(j, tid)
            if not len(d):
                continue
            df = len(d) if live is None else int(live[d].sum())
            idf = idf_weights(np.array([df]), st["field_docs"][j], "lucene")[0]
            imp = (idf - idf / (np.float32(1) + tf.astype(np.float32) * st["inv"][j][d])).astype(np.float32)
            docs_parts.append(d)
            vals.append((np.float32(self.weights[name]) * imp).astype(np.float64))
        if not docs_parts:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        docs, where = np.unique(np.concatenate(docs_parts), return_inverse=True)
        return docs, np.bincount(where, weights=np.concatenate(vals)).astype(np.float32)

    def _query_terms(self, queries: Queries, i: int, vocab: Mapping[str, int]) -> list[tuple[int, float]]:
        weighted = queries.term_weights(i)
        if weighted is None:
            text = queries.texts[i]
            if not text or not text.strip():
                raise EmptyQueryError(f"query {queries.ids[i]!r} is empty; give it some text")
            weighted = Counter(self.index.analyzer(text))
        return [(vocab[t], float(w)) for t, w in weighted.items() if t in vocab]

    def _scores(self, st: dict[str, Any], terms: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Accumulated float64 scores and the touched mask (query terms in order, each
        term's float32 contribution times its query weight summed in double, as bm25)."""
        acc = np.zeros(st["n_docs"], dtype=np.float64)
        touched = np.zeros(st["n_docs"], dtype=bool)
        for tid, weight in terms:
            docs, s = self._term_scores(st, tid)
            acc[docs] += (np.float32(weight) * s).astype(np.float64)
            touched[docs] = True
        return acc, touched

    def transform(self, inp: Queries | Rankings) -> Rankings:
        if isinstance(inp, Rankings):
            return self._score_candidates(inp)
        queries = inp
        st = self._arrays()
        vocab = st["fp"].vocab
        allowed = self.index.allowed(self.filter)
        lists = []
        for i in range(len(queries)):
            acc, touched = self._scores(st, self._query_terms(queries, i, vocab))
            if allowed is not None:
                touched &= allowed
            cand = np.flatnonzero(touched)
            scores = acc[cand].astype(np.float32)
            order = np.lexsort((st["id_rank"][cand], -scores))[: self.k]
            lists.append((st["ids"][cand[order]], scores[order]))
        return Rankings.from_lists(queries, lists)

    def _score_candidates(self, rankings: Rankings) -> Rankings:
        st = self._arrays()
        queries = rankings.queries
        id_map = self.index._ids_to_global()
        keep = None if self.filter is None else self.index.filter_mask(self.filter)

        def score(i: int, cands: np.ndarray) -> np.ndarray:
            acc, _ = self._scores(st, self._query_terms(queries, i, st["fp"].vocab))
            return acc[cands].astype(np.float32)

        return rank_candidates(rankings, id_map, st["id_rank"], "bm25f", score, keep=keep)

    # ------------------------------------------------------------------ identity
    def spec(self, resources: bool = True) -> str:
        params: dict[str, Any] = dict(self.weights)
        params.update({f"b_{f}": v for f, v in self.b.items() if v != DEFAULT_B})
        if self.k1 != 0.9:
            params["k1"] = self.k1
        if self.combine != "bm25f":
            params["combine"] = self.combine
        if self.filter is not None:
            params["filter"] = self.filter
        return self._finish_spec(params, resources)


__all__ = ["BM25F", "COMBINE", "FieldPostings", "field_postings"]

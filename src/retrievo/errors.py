"""Typed errors: every failure a user can cause has its own class and an actionable message.

All inherit from :class:`RetrievoError`, so callers can catch one type; each also inherits
from the closest built-in (``ValueError``, ``KeyError``, ``OSError``) so generic handlers
keep working.
"""

from __future__ import annotations

from pathlib import Path


class RetrievoError(Exception):
    """Base class of every error retrievo raises on purpose."""


class DataFormatError(RetrievoError, ValueError):
    """A data file is malformed. Names the file and, where known, the line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)


class MissingFieldError(DataFormatError):
    """A record lacks a required field (e.g. a BEIR corpus line without ``_id``)."""


class DuplicateIdError(DataFormatError):
    """The same document or query id appears twice where ids must be unique."""


class EmptyQueryError(RetrievoError, ValueError):
    """A query has no text, or no searchable term left after analysis."""


class UnknownIdError(RetrievoError, KeyError):
    """A document or query id that the index / collection does not hold."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else ""


class PipelineSpecError(RetrievoError, ValueError):
    """A pipeline spec string could not be parsed, names an unknown stage, or gives a
    stage an unknown option or a value it cannot take."""


class PipelineCompositionError(PipelineSpecError):
    """Two stages cannot be chained: the first gives what the second does not take
    (e.g. a reader's answers into a reranker). Raised when the pipeline is built."""


class StageInputError(RetrievoError, TypeError):
    """A stage was called with input of a kind it does not take (e.g. plain queries
    given to a reranker, which needs rankings)."""


class ResourceError(RetrievoError, LookupError):
    """A resource named in a pipeline spec (an index, a model) cannot be opened here,
    e.g. an in-memory index named in another process."""


class IndexError_(RetrievoError, OSError):
    """Base of on-disk index problems (named with a trailing _ to avoid the builtin)."""


class IndexNotFoundError(IndexError_):
    """The path holds no retrievo index."""


class CorruptIndexError(IndexError_):
    """The index on disk is unreadable: missing files, bad manifest, checksum mismatch."""


class IndexFormatVersionError(IndexError_):
    """The index was written by an incompatible format version."""


class IndexLockedError(IndexError_):
    """Another writer holds the index's write lock."""


class IndexConflictError(IndexError_):
    """A writer's view of the index is stale: another writer published a generation since
    it was opened. Nothing is damaged; reopen the index and repeat the change."""


class DiskFullError(IndexError_):
    """A write failed because the file system holding ``path`` is full. Nothing published
    is damaged (writes never touch published files); free space and retry."""

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = None if path is None else str(path)
        super().__init__(message)

    def __reduce__(self):  # keep the path when the error crosses a process boundary
        return (type(self), (self.args[0] if self.args else "", self.path))


class ConfigError(RetrievoError, ValueError):
    """An option has a value that cannot work (e.g. k1 < 0)."""


class AnalyzerConfigError(ConfigError):
    """An analyzer configuration is invalid (unknown stemmer, bad option...)."""


class ModelMismatchError(ConfigError):
    """A vector index is searched (or extended) with another model than the one that
    encoded it: the scores would be meaningless, so it is refused."""


class VocabularyMismatchError(ModelMismatchError):
    """A sparse index's terms and a query encoder's vocabulary differ (an index of
    impacts built with another tokenizer): most query terms would match nothing, so the
    search is refused instead of returning near-random results."""


class EmptyDocumentError(DataFormatError):
    """A document has no text to encode (a learned sparse or multi-vector encoder would
    give it no terms or no token vectors)."""


class TokenizerMismatchError(ModelMismatchError):
    """A tokenizer that does not belong to the model it is paired with (ids beyond the
    model's vocabulary, or another vocabulary than the one a checkpoint or adapter was
    trained with): every score would be computed on the wrong tokens, so it is refused."""


class AdapterMismatchError(ModelMismatchError):
    """A LoRA adapter (or a training checkpoint) loaded beside another base model than the
    one it was trained on: its weight deltas only mean something on that base."""


class EmptyTrainingSetError(ConfigError):
    """Training was asked for with nothing to learn from: no judged query with a positive
    document left in the training split (after the dev split was carved out), or no
    negative to contrast it with."""


class DocumentTooLongError(ConfigError):
    """A document is longer than the encoder's token limit and the stage was told not to
    truncate it (``overflow=error``)."""


class DimensionMismatchError(ConfigError):
    """Vectors whose dimension differs from the index's (or ids and vectors that do not
    pair up)."""


class FilterError(ConfigError):
    """A metadata filter that cannot be applied to an index (base of the three below)."""


class FilterSyntaxError(FilterError):
    """A filter expression that does not parse; ``position`` is the 0-based character
    offset of the problem in ``expression``, and the message points at it."""

    def __init__(self, message: str, expression: str = "", position: int | None = None):
        self.expression, self.position = expression, position
        if position is not None and expression:
            message = f"{message} at position {position}:\n  {expression}\n  {' ' * position}^"
        super().__init__(message)

    def __reduce__(self):
        return (type(self), (self.args[0] if self.args else "", "", None))


class UnknownFieldError(FilterError, KeyError):
    """A filter names a metadata field that no document of the index has."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class FilterTypeError(FilterError, TypeError):
    """A filter compares a field with a value of another type (``year = 'abc'`` on a
    number column), or uses an operator the field's type does not have (a range on a
    keyword)."""


class EvaluationError(RetrievoError, ValueError):
    """Runs and judgments that cannot be evaluated together (e.g. no query id in common)."""


class MetricError(EvaluationError):
    """A metric name that ir_measures cannot parse or no installed provider computes."""


class MissingExtraError(RetrievoError, ImportError):
    """An optional dependency (pandas, matplotlib) is needed; the message names the extra."""


class LLMError(RetrievoError):
    """Something went wrong talking to a language model (local or over HTTP)."""


class CapabilityError(LLMError, NotImplementedError):
    """A method needs what a backend does not offer (e.g. attention weights over HTTP);
    the message names the capability and the backends that have it."""


class ContextLengthError(LLMError, ValueError):
    """A prompt does not fit the model's context even after the documents in it were
    truncated as far as the method allows."""


class LLMServerError(LLMError, ConnectionError):
    """An LLM server is down, refused the request, or kept failing after the retries."""


class LLMTimeoutError(LLMServerError, TimeoutError):
    """An LLM server did not answer within the timeout (after the retries)."""


class LLMResponseError(LLMError, ValueError):
    """An LLM server answered with something that is not a valid response (malformed
    JSON, missing fields, logprobs that were asked for and not given)."""


class ModelNotFoundError(ConfigError, FileNotFoundError):
    """A model name or path that resolves to nothing loadable (no such folder or file,
    no such name offline, or a file whose checksum differs from the pinned one)."""


__all__ = [
    "LLMError",
    "CapabilityError",
    "ContextLengthError",
    "LLMServerError",
    "LLMTimeoutError",
    "LLMResponseError",
    "ModelNotFoundError",
    "RetrievoError",
    "DataFormatError",
    "MissingFieldError",
    "DuplicateIdError",
    "EmptyQueryError",
    "UnknownIdError",
    "PipelineSpecError",
    "PipelineCompositionError",
    "StageInputError",
    "ResourceError",
    "IndexError_",
    "IndexNotFoundError",
    "CorruptIndexError",
    "IndexFormatVersionError",
    "IndexLockedError",
    "IndexConflictError",
    "DiskFullError",
    "ConfigError",
    "AnalyzerConfigError",
    "ModelMismatchError",
    "DimensionMismatchError",
    "VocabularyMismatchError",
    "TokenizerMismatchError",
    "AdapterMismatchError",
    "EmptyTrainingSetError",
    "EmptyDocumentError",
    "DocumentTooLongError",
    "EvaluationError",
    "FilterError",
    "FilterSyntaxError",
    "FilterTypeError",
    "UnknownFieldError",
    "MetricError",
    "MissingExtraError",
]

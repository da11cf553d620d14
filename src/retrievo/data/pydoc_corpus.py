"""The built-in demo corpus: Python's own documentation topics, present on every machine.

``pydoc_data.topics`` ships with CPython (it backs ``help("topics")``), so a first search,
the tutorials and the tests can run with no download at all. Topics are split into short
passages so results land on the paragraph that answers the question.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType

from retrievo.data.collection import BatchingMixin
from retrievo.errors import DataFormatError, UnknownIdError
from retrievo.text.chunk import split_passages
from retrievo.types import Document, Queries

PYDOC_PASSAGE_WORDS = 120

DEMO_QUERIES = Queries(
    [f"demo{i}" for i in range(1, 9)],
    [
        "catch an exception raised in a try block",
        "list comprehension syntax",
        "with statement context manager",
        "decorators",
        "string formatting",
        "default values of function arguments",
        "yield expression in a generator function",
        "identity comparison with the is operator",
    ],
)


def _load_topics() -> dict[str, str]:
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions split it into a separate package
        raise DataFormatError("the Python documentation topics (module pydoc_data) are not installed "
                              "with this Python; install your distribution's full Python package") from None
    return topics


class PydocCorpus(BatchingMixin):
    """Passages of every ``pydoc_data`` topic, ids ``pydoc:<topic>#<n>`` (n from 1),
    title = topic name, topics in sorted order, so ids are stable for a Python version."""

    def __init__(self, max_words: int = PYDOC_PASSAGE_WORDS, overlap: int = 0):
        self.max_words, self.overlap = max_words, overlap

    def __repr__(self) -> str:
        return f"PydocCorpus(max_words={self.max_words})"

    def iter_documents(self) -> Iterator[Document]:
        topics = _load_topics()
        for topic in sorted(topics):
            for n, passage in enumerate(split_passages(topics[topic], self.max_words, self.overlap), start=1):
                yield Document(f"pydoc:{topic}#{n}", passage, topic,
                               MappingProxyType({"topic": topic, "passage": n}))

    def queries(self, split: str | None = None) -> Queries:
        """The built-in :data:`DEMO_QUERIES` (there are no judgments, hence no splits)."""
        if split is not None:
            raise UnknownIdError(f"the pydoc demo corpus has no qrels splits (asked for {split!r})")
        return DEMO_QUERIES


def iter_pydoc_documents(max_words: int = PYDOC_PASSAGE_WORDS) -> Iterator[Document]:
    """Shortcut for ``PydocCorpus(max_words).iter_documents()``."""
    return PydocCorpus(max_words).iter_documents()


__all__ = ["DEMO_QUERIES", "PYDOC_PASSAGE_WORDS", "PydocCorpus", "iter_pydoc_documents"]

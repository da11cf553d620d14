"""What every document source offers, so indexers need not care where documents live.

BEIR folders, single JSONL files, folders of text files, the built-in Python docs and
ir_datasets all stream :class:`~retrievo.types.Document` objects through the same three
methods; sources that carry evaluation data add ``queries`` and ``qrels``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Protocol, TypeVar, runtime_checkable

from retrievo.types import Document

T = TypeVar("T")


@runtime_checkable
class DocumentCollection(Protocol):
    """A re-iterable, streaming source of documents."""

    def iter_documents(self) -> Iterator[Document]: ...

    def iter_batches(self, batch_size: int = 10_000) -> Iterator[list[Document]]: ...

    def num_documents(self) -> int: ...


def batched(items: Iterable[T], batch_size: int) -> Iterator[list[T]]:
    """Consecutive lists of ``batch_size`` items (the last one may be shorter)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    iterator = iter(items)
    while batch := list(islice(iterator, batch_size)):
        yield batch


class BatchingMixin(ABC):
    """``iter_batches`` and a counting ``num_documents`` on top of ``iter_documents``."""

    @abstractmethod
    def iter_documents(self) -> Iterator[Document]:
        """Stream the documents, in a stable order."""

    def iter_batches(self, batch_size: int = 10_000) -> Iterator[list[Document]]:
        """Documents in lists of ``batch_size``, for encoders that work batch-wise."""
        return batched(self.iter_documents(), batch_size)

    def num_documents(self) -> int:
        """Count by streaming every document once."""
        return sum(1 for _ in self.iter_documents())


__all__ = ["BatchingMixin", "DocumentCollection", "batched"]

"""Bridge to ir_datasets: hundreds of standard collections under one name each.

ir_datasets is an optional extra (``pip install 'retrievo[datasets]'``) and is imported
only when a dataset is loaded. Its records are namedtuples whose fields differ per
collection, so documents keep ``doc_id``, ``title`` and a text field as first-class
attributes and everything else in ``meta``.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

from retrievo.data.collection import BatchingMixin
from retrievo.errors import ConfigError, DataFormatError, MissingExtraError, UnknownIdError
from retrievo.types import Document, Qrels, Queries

DOC_TEXT_FIELDS = ("text", "body", "passage", "contents", "abstract")
QUERY_TEXT_FIELDS = ("text", "query", "title")


def _import_ir_datasets():
    try:
        import ir_datasets
    except ImportError:
        raise MissingExtraError("ir_datasets is not installed; install it with: "
                                "pip install 'retrievo[datasets]'") from None
    return ir_datasets


def _fields(record: Any) -> dict[str, Any]:
    if hasattr(record, "_asdict"):
        return dict(record._asdict())
    raise DataFormatError(f"expected an ir_datasets namedtuple record, got {type(record).__name__}")


def _text(record: Any, fields: dict[str, Any], candidates: tuple[str, ...]) -> tuple[str, str | None]:
    """The record's main text and the field it came from (``None``: ``default_text()``)."""
    for name in candidates:
        if isinstance(fields.get(name), str):
            return fields[name], name
    if hasattr(record, "default_text"):
        return record.default_text(), None
    return " ".join(v for v in fields.values() if isinstance(v, str)), None


def document_from_irds(record: Any) -> Document:
    """A :class:`Document` from one ``docs_iter()`` record."""
    fields = _fields(record)
    if "doc_id" not in fields:
        raise DataFormatError(f"document record {type(record).__name__} has no doc_id field")
    title = fields.get("title") if isinstance(fields.get("title"), str) else ""
    text, text_field = _text(record, {k: v for k, v in fields.items() if k != "title"}, DOC_TEXT_FIELDS)
    meta = {k: v for k, v in fields.items() if k not in ("doc_id", "title", text_field)}
    return Document(str(fields["doc_id"]), text, title, MappingProxyType(meta))


class IrDataset(BatchingMixin):
    """Documents, queries and qrels of one ir_datasets dataset (or anything with the same
    ``docs_iter`` / ``queries_iter`` / ``qrels_iter`` methods)."""

    def __init__(self, dataset: Any, name: str = ""):
        self.dataset, self.name = dataset, name

    def __repr__(self) -> str:
        return f"IrDataset({self.name!r})"

    def _require(self, kind: str) -> None:
        check = getattr(self.dataset, f"has_{kind}", None)
        available = check() if callable(check) else hasattr(self.dataset, f"{kind}_iter")
        if not available:
            raise DataFormatError(f"ir_datasets dataset {self.name!r} provides no {kind}")

    def iter_documents(self) -> Iterator[Document]:
        self._require("docs")
        return (document_from_irds(record) for record in self.dataset.docs_iter())

    def num_documents(self) -> int:
        """From ``docs_count()`` when the dataset knows it, otherwise by streaming."""
        count = getattr(self.dataset, "docs_count", None)
        known = count() if callable(count) else None
        return int(known) if known is not None else super().num_documents()

    def queries(self, split: str | None = None) -> Queries:
        """All queries; ir_datasets names splits in the dataset id (``beir/scifact/test``)."""
        if split is not None:
            raise ConfigError(f"ir_datasets puts the split in the dataset name (e.g. '{self.name}/{split}'); "
                              "load that dataset instead of passing split=")
        self._require("queries")
        ids, texts, metas = [], [], []
        for record in self.dataset.queries_iter():
            fields = _fields(record)
            qid = fields.pop("query_id", None)
            if qid is None:
                raise DataFormatError(f"query record {type(record).__name__} has no query_id field")
            text, text_field = _text(record, fields, QUERY_TEXT_FIELDS)
            ids.append(str(qid)), texts.append(text)
            metas.append({k: v for k, v in fields.items() if k != text_field})
        return Queries(ids, texts, metas if any(metas) else None)

    def qrels(self, split: str | None = None) -> Qrels:
        """All judgments (``query_id``, ``doc_id``, ``relevance``)."""
        if split is not None:
            raise ConfigError(f"ir_datasets puts the split in the dataset name (e.g. '{self.name}/{split}')")
        self._require("qrels")
        qids, docs, rels = [], [], []
        for record in self.dataset.qrels_iter():
            qids.append(str(record.query_id)), docs.append(str(record.doc_id)), rels.append(int(record.relevance))
        return Qrels(qids, docs, rels)


def load_ir_dataset(name: str) -> IrDataset:
    """Open ``ir_datasets.load(name)``; downloads happen lazily, on first iteration."""
    ir_datasets = _import_ir_datasets()
    try:
        dataset = ir_datasets.load(name)
    except KeyError:
        raise UnknownIdError(f"ir_datasets has no dataset {name!r}; see https://ir-datasets.com") from None
    return IrDataset(dataset, name)


__all__ = ["IrDataset", "document_from_irds", "load_ir_dataset"]

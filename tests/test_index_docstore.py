"""The shared document store, index identity, pickling and the one-line summaries."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

from retrievo.data import PydocCorpus
from retrievo.errors import ConfigError, UnknownIdError
from retrievo.index import InvertedIndex
from retrievo.retrieve import BM25
from retrievo.types import Document, Queries

QUERIES = Queries.of(["how do I catch an exception", "list comprehension syntax", "with statement context manager",
                      "string formatting", "yield keyword generator"])


@pytest.fixture(scope="module")
def pydoc_docs() -> list[Document]:
    return list(PydocCorpus().iter_documents())


def same_results(a, b) -> None:
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.doc_ids, b.doc_ids)
    np.testing.assert_array_equal(a.scores, b.scores)


def full(doc: Document) -> tuple:
    return doc.doc_id, doc.title, doc.text, dict(doc.meta)


@pytest.mark.parametrize("on_disk", [False, True])
def test_get_many_keeps_order_and_names_every_missing_id(tmp_path, pydoc_docs, on_disk):
    docs = pydoc_docs[:200]
    idx = InvertedIndex.build(docs[:120], tmp_path / "idx" if on_disk else None, segment_docs=50, merge=False)
    idx.add(docs[120:])
    idx.delete([docs[5].doc_id])
    wanted = [docs[150].doc_id, docs[0].doc_id, docs[150].doc_id, docs[60].doc_id]
    assert [full(d) for d in idx.documents(wanted)] == [full(docs[i]) for i in (150, 0, 150, 60)]
    assert full(idx.document(docs[199].doc_id)) == full(docs[199])
    with pytest.raises(UnknownIdError) as caught:
        idx.documents([docs[1].doc_id, "nope-1", docs[5].doc_id, "nope-2"])
    assert all(name in str(caught.value) for name in ("nope-1", "nope-2", docs[5].doc_id))
    assert docs[5].doc_id not in idx and docs[6].doc_id in idx and len(idx.docstore) == 199
    assert [full(d) for d in idx.iter_documents()] == [full(d) for i, d in enumerate(docs) if i != 5]


def test_one_document_store_per_snapshot(tmp_path, pydoc_docs):
    idx = InvertedIndex.build(pydoc_docs[:80], tmp_path / "idx")
    store = idx.docstore
    idx.document(pydoc_docs[3].doc_id)
    assert idx.docstore is store  # the id map and the part readers are built once
    idx.delete([pydoc_docs[3].doc_id])
    assert idx.docstore is not store and pydoc_docs[3].doc_id not in idx.docstore


def test_documents_survive_a_merge_that_collects_their_files(tmp_path, pydoc_docs):
    path = tmp_path / "idx"
    InvertedIndex.build(pydoc_docs[:150], path, segment_docs=50, merge=False)
    reader = InvertedIndex.open(path)
    writer = InvertedIndex.open(path)
    writer.delete([d.doc_id for d in pydoc_docs[:150:3]])
    writer.merge()
    assert not any((path / "docs" / p.name).exists() for p in reader.doc_parts)  # files gone from the folder
    assert full(reader.document(pydoc_docs[0].doc_id)) == full(pydoc_docs[0])  # still readable through the maps
    merged = InvertedIndex.open(path)
    kept = [d for i, d in enumerate(pydoc_docs[:150]) if i % 3]
    assert [full(d) for d in merged.iter_documents()] == [full(d) for d in kept]
    assert len(merged.doc_parts) == 1 and merged.doc_parts[0].n_docs == len(kept)


def test_an_index_without_a_store_knows_ids_but_refuses_text(tmp_path, pydoc_docs):
    docs = pydoc_docs[:60]
    for idx in (InvertedIndex.build(docs, store=False), InvertedIndex.build(docs, tmp_path / "idx", store=False)):
        assert docs[4].doc_id in idx and len(idx) == 60 and idx.locate(docs[4].doc_id) == 4
        assert not idx.store and not idx.describe()["store"]
        for attempt in (lambda: idx.document(docs[4].doc_id), lambda: idx.documents([docs[4].doc_id]),
                        lambda: idx.iter_documents()):
            with pytest.raises(ConfigError, match="store=False"):
                attempt()
        same_results(BM25(InvertedIndex.build(docs))(QUERIES), BM25(idx)(QUERIES))
    assert list((tmp_path / "idx").glob("docs/*/ids.txt")) and not list((tmp_path / "idx").glob("docs/*/store.jsonl"))


def test_identity_follows_content_not_layout_names_or_time(tmp_path, pydoc_docs):
    docs = pydoc_docs[:300]
    a = InvertedIndex.build(docs, tmp_path / "a")
    b = InvertedIndex.build(docs, tmp_path / "b", segment_docs=70)  # other segment names, merged to one
    memory = InvertedIndex.build(docs)
    assert re.fullmatch(r"[0-9a-f]{64}", a.identity)
    assert a.identity == b.identity == memory.identity == InvertedIndex.open(tmp_path / "a").identity
    assert memory.save(tmp_path / "saved").identity == a.identity
    other_analyzer = InvertedIndex.build(docs, analyzer={"stemmer": "none"})
    assert other_analyzer.identity != a.identity
    unmerged = InvertedIndex.build(docs, segment_docs=70, merge=False)
    assert unmerged.identity != a.identity  # the identity names a physical layout, not just the ranking
    b.delete([docs[0].doc_id])
    assert b.identity != a.identity
    assert InvertedIndex.open(tmp_path / "b").identity == b.identity
    memory.delete([docs[0].doc_id])
    assert memory.identity == b.identity


def test_pickling_by_reference_on_disk_and_by_value_in_memory(tmp_path, pydoc_docs):
    memory = InvertedIndex.build(pydoc_docs[:400])
    memory.delete([pydoc_docs[1].doc_id])
    disk = InvertedIndex.build(pydoc_docs[:400], tmp_path / "idx", segment_docs=150, merge=False)
    disk.document(pydoc_docs[2].doc_id)  # caches and memory maps must not travel
    for idx in (memory, disk):
        BM25(idx)(QUERIES)
        copy = pickle.loads(pickle.dumps(idx))
        assert copy is not idx and copy.identity == idx.identity and copy.path == idx.path
        same_results(BM25(idx)(QUERIES), BM25(copy)(QUERIES))
        assert full(copy.document(pydoc_docs[2].doc_id)) == full(pydoc_docs[2])
    assert len(pickle.dumps(disk)) < 500  # a path, not the arrays
    payload = pickle.dumps(disk)
    disk.add(pydoc_docs[400:410])
    assert len(pickle.loads(payload)) == 410  # by reference: it reopens whatever is current


def test_repr_and_describe(tmp_path, pydoc_docs):
    memory = InvertedIndex.build(pydoc_docs[:1200])
    assert re.fullmatch(r"<InvertedIndex in memory: [\d,]+ docs, [\d,]+ terms, 1 segment>", repr(memory))
    path = tmp_path / "sf.idx"
    idx = InvertedIndex.build(pydoc_docs, path, segment_docs=400, merge=False)
    idx.delete([pydoc_docs[0].doc_id])
    facts = idx.describe()
    assert facts["documents"] == len(pydoc_docs) - 1 and facts["deleted"] == 1
    assert (facts["segments"], facts["generation"], facts["format"], facts["format_version"]) == \
        (len(idx.segments), 2, "retrievo-inverted", 2)
    assert facts["terms"] == idx.vocab_size and facts["store"] is True and facts["path"] == str(path)
    assert facts["identity"] == idx.identity and facts["analyzer"] == idx.analyzer.config()
    everything = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    assert 0 < facts["size_on_disk_bytes"] <= everything
    assert repr(idx) == (f"<InvertedIndex 'sf.idx' gen 2: {len(idx):,} docs, {idx.vocab_size:,} terms, "
                         f"{len(idx.segments)} segments, {facts['size_on_disk_bytes'] / 1e6:,.1f} MB>")
    assert memory.describe()["size_on_disk_bytes"] is None and memory.describe()["path"] is None

"""Inverted index life cycle: build, save/open, add/delete/merge, atomicity, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import psutil
import pytest

from retrievo.data import PydocCorpus
from retrievo.errors import (
    CorruptIndexError,
    DuplicateIdError,
    EmptyQueryError,
    IndexConflictError,
    IndexFormatVersionError,
    IndexLockedError,
    IndexNotFoundError,
    PipelineSpecError,
    UnknownIdError,
)
from retrievo.index import InvertedIndex
from retrievo.index.atomic import write_lock
from retrievo.pipeline import parse
from retrievo.retrieve import BM25
from retrievo.types import Document, Queries

QUERIES = Queries.of([
    "how do I catch an exception", "list comprehension syntax", "with statement context manager",
    "decorators", "string formatting", "default values of function arguments", "yield keyword generator",
    "class inheritance and super", "import a module from a package", "the global statement",
])


def resigned(manifest: dict) -> dict:
    """``manifest`` as another writer (a plugin format, an older retrievo) would have
    written it: with a valid checksum, so only the edited field is under test."""
    from retrievo.index import lifecycle as _lifecycle

    return {**manifest, "checksum": _lifecycle.manifest_checksum(manifest)}


@pytest.fixture(scope="module")
def pydoc_docs() -> list[Document]:
    return list(PydocCorpus().iter_documents())


def same_results(a, b) -> None:
    assert a.queries.ids == b.queries.ids
    np.testing.assert_array_equal(a.offsets, b.offsets)
    np.testing.assert_array_equal(a.doc_ids, b.doc_ids)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_in_memory_and_on_disk_agree(tmp_path, pydoc_docs):
    mem = InvertedIndex.build(pydoc_docs)
    disk = InvertedIndex.build(pydoc_docs, tmp_path / "idx", segment_docs=97)  # several segments, then merged
    assert len(disk.segments) == 1
    reopened = InvertedIndex.open(tmp_path / "idx")
    assert isinstance(reopened.segments[0].docs, np.memmap)
    for idx in (disk, reopened):
        assert len(idx) == len(mem) == len(pydoc_docs)
        assert idx.vocab_size == mem.vocab_size
        same_results(BM25(mem, k=50)(QUERIES), BM25(idx, k=50)(QUERIES))
    doc = reopened.document(pydoc_docs[10].doc_id)
    assert doc == pydoc_docs[10]
    manifest = json.loads((tmp_path / "idx" / (tmp_path / "idx" / "CURRENT").read_text().strip()).read_text())
    assert manifest["format"] == "retrievo-inverted" and manifest["format_version"] == 2
    assert manifest["payload"]["analyzer"] == mem.analyzer.config()
    assert disk.identity == reopened.identity == mem.identity == manifest["identity"]


def test_unmerged_segments_search_like_one(tmp_path, pydoc_docs):
    one = InvertedIndex.build(pydoc_docs)
    many = InvertedIndex.build(pydoc_docs, tmp_path / "idx", segment_docs=100, merge=False)
    assert len(many.segments) == 8 and len(InvertedIndex.open(tmp_path / "idx").segments) == 8
    same_results(BM25(one)(QUERIES), BM25(many)(QUERIES))


def test_threads_do_not_change_results(pydoc_docs):
    idx = InvertedIndex.build(pydoc_docs)
    same_results(BM25(idx, threads=1)(QUERIES), BM25(idx, threads=2)(QUERIES))


@pytest.mark.parametrize("on_disk", [False, True])
def test_add_and_delete_equal_a_fresh_build(tmp_path, pydoc_docs, on_disk):
    first, second = pydoc_docs[:400], pydoc_docs[400:]
    deleted = [d.doc_id for d in pydoc_docs[::7]]
    kept = [d for d in pydoc_docs if d.doc_id not in set(deleted)]
    fresh = InvertedIndex.build(kept)
    idx = InvertedIndex.build(first, tmp_path / "idx" if on_disk else None)
    assert idx.add(second) == [d.doc_id for d in second]
    assert idx.delete(deleted) == len(deleted)
    assert len(idx.segments) == 2 and len(idx) == len(kept)
    for method in ("lucene", "robertson", "bm25+"):
        same_results(BM25(fresh, method=method)(QUERIES), BM25(idx, method=method)(QUERIES))
    if on_disk:
        reopened = InvertedIndex.open(tmp_path / "idx")
        assert len(reopened) == len(kept)
        same_results(BM25(fresh)(QUERIES), BM25(reopened)(QUERIES))
        with pytest.raises(UnknownIdError):
            reopened.document(deleted[0])
    idx.merge()
    assert len(idx.segments) == 1 and idx.live is None
    same_results(BM25(fresh)(QUERIES), BM25(idx)(QUERIES))
    if on_disk:
        same_results(BM25(fresh)(QUERIES), BM25(InvertedIndex.open(tmp_path / "idx"))(QUERIES))


def test_reader_keeps_its_snapshot_while_documents_are_added(tmp_path, pydoc_docs):
    InvertedIndex.build(pydoc_docs[:300], tmp_path / "idx")
    reader = InvertedIndex.open(tmp_path / "idx")
    before = BM25(reader)(QUERIES)
    writer = InvertedIndex.open(tmp_path / "idx")
    writer.add(pydoc_docs[300:600])
    writer.add(pydoc_docs[600:])  # two generations later: the reader's files may be gone from the folder
    same_results(before, BM25(reader)(QUERIES))
    assert len(InvertedIndex.open(tmp_path / "idx")) == len(pydoc_docs)


def test_writer_conflicts_are_detected(tmp_path, pydoc_docs):
    InvertedIndex.build(pydoc_docs[:50], tmp_path / "idx")
    a = InvertedIndex.open(tmp_path / "idx")
    b = InvertedIndex.open(tmp_path / "idx")
    a.add(pydoc_docs[50:60])
    with pytest.raises(IndexConflictError, match="another writer") as raised:  # a race, not damage
        b.add(pydoc_docs[60:70])
    assert not isinstance(raised.value, CorruptIndexError)
    with write_lock(tmp_path / "idx"):
        with pytest.raises(IndexLockedError):
            InvertedIndex.open(tmp_path / "idx").delete([pydoc_docs[0].doc_id])


def test_bad_input_errors(tmp_path, pydoc_docs):
    docs = pydoc_docs[:20]
    with pytest.raises(DuplicateIdError, match=docs[3].doc_id):
        InvertedIndex.build([*docs, docs[3]])
    idx = InvertedIndex.build(docs)
    with pytest.raises(DuplicateIdError):
        idx.add([docs[0]])
    with pytest.raises(UnknownIdError, match="nope"):
        idx.delete(["nope"])
    assert idx.delete(["nope"], missing_ok=True) == 0
    with pytest.raises(EmptyQueryError, match="q1"):
        BM25(idx)(Queries(["q1"], ["   "]))
    assert len(BM25(idx).search("the of and")) == 0  # only stop words: no terms, no results
    with pytest.raises(PipelineSpecError, match="unknown pipeline stage 'bm42'"):
        parse("bm42", {"index": idx})
    with pytest.raises(PipelineSpecError):
        parse("bm25(k1=", {"index": idx})
    with pytest.raises(IndexNotFoundError):
        InvertedIndex.open(tmp_path / "missing")
    (tmp_path / "notindex").mkdir()
    with pytest.raises(IndexNotFoundError):
        InvertedIndex.open(tmp_path / "notindex")
    with pytest.raises(TypeError):
        InvertedIndex.build(["plain strings are not documents"])


def test_unreadable_and_incompatible_indexes(tmp_path, pydoc_docs):
    path = tmp_path / "idx"
    InvertedIndex.build(pydoc_docs[:30], path)
    manifest_path = path / (path / "CURRENT").read_text().strip()
    manifest = json.loads(manifest_path.read_text())

    manifest_path.write_text(json.dumps(resigned({**manifest, "format_version": 999})))
    with pytest.raises(IndexFormatVersionError, match="Rebuild"):
        InvertedIndex.open(path)
    manifest_path.write_text(json.dumps(manifest))

    seg = path / "segments" / manifest["payload"]["segments"][0]["name"]
    original = (seg / "docs.npy").read_bytes()
    (seg / "docs.npy").write_bytes(original[: len(original) // 2])
    with pytest.raises(CorruptIndexError):
        InvertedIndex.open(path)
    (seg / "docs.npy").write_bytes(original)

    (path / "CURRENT").write_text("garbage")
    with pytest.raises(CorruptIndexError):
        InvertedIndex.open(path)


CRASHING_WRITER = textwrap.dedent("""
    import sys, time
    from retrievo.data import PydocCorpus
    from retrievo.index import InvertedIndex
    marker = sys.argv[2]
    def docs():
        for i, d in enumerate(PydocCorpus().iter_documents()):
            if i == int(sys.argv[3]):
                open(marker, "w").close()  # segments are on disk by now; wait to be killed
                time.sleep(60)
            yield d
    InvertedIndex.build(docs(), sys.argv[1], segment_docs=50)
""")


@pytest.mark.parametrize("mode", ["rebuild", "add"])
def test_killed_writer_leaves_previous_index_intact(tmp_path, pydoc_docs, mode):
    path = tmp_path / "idx"
    InvertedIndex.build(pydoc_docs[:200], path)
    before = BM25(InvertedIndex.open(path))(QUERIES)
    marker = tmp_path / "marker"
    script = CRASHING_WRITER
    if mode == "add":
        script = script.replace("InvertedIndex.build(docs(), sys.argv[1], segment_docs=50)",
                                "InvertedIndex.open(sys.argv[1]).add((d for i, d in enumerate(docs()) if i >= 200),"
                                " segment_docs=50)")
    crash_at = "150" if mode == "rebuild" else "330"
    proc = subprocess.Popen([sys.executable, "-c", script, str(path), str(marker), crash_at])
    try:
        deadline = time.time() + 120
        while not marker.exists():
            assert proc.poll() is None, "writer exited before the crash point"
            assert time.time() < deadline
            time.sleep(0.05)
        workers = psutil.Process(proc.pid).children(recursive=True)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # analysis workers notice their parent died and exit instead of lingering
        gone, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive
    finally:
        if proc.poll() is None:
            proc.kill()
    idx = InvertedIndex.open(path)
    assert len(idx) == 200
    same_results(before, BM25(idx)(QUERIES))
    # the next writer cleans up after the dead one and works normally
    idx.add(pydoc_docs[200:260])
    assert len(InvertedIndex.open(path)) == 260
    assert not [p for p in (path / "segments").iterdir() if "retrievo-tmp" in p.name]


def test_save_in_memory_index(tmp_path, pydoc_docs):
    idx = InvertedIndex.build(pydoc_docs[:100])
    idx.delete([pydoc_docs[0].doc_id])
    saved = idx.save(tmp_path / "saved")
    same_results(BM25(idx)(QUERIES), BM25(InvertedIndex.open(tmp_path / "saved"))(QUERIES))
    assert len(saved) == 99
    with pytest.raises(FileExistsError):
        idx.save(tmp_path / "saved")


def test_build_refuses_to_overwrite_a_non_index_folder(tmp_path, pydoc_docs):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        InvertedIndex.build(pydoc_docs[:5], folder)
    assert (folder / "notes.txt").read_text() == "precious"


def test_empty_and_stopword_only_documents(tmp_path):
    docs = [Document("a", "the of and"), Document("b", ""), Document("c", "retrieval models rank documents"),
            Document("d", "ranking documents with BM25 retrieval")]
    idx = InvertedIndex.build(docs)
    stats = idx.collection_stats()
    assert stats["num_docs"] == 4 and stats["doc_count"] == 2  # Lucene counts documents that have terms
    ranked = BM25(idx).search("retrieval documents")
    assert set(ranked.doc_ids) == {"c", "d"}


def test_failed_first_build_leaves_nothing_behind(tmp_path, pydoc_docs):
    def docs_then_duplicate():
        yield from pydoc_docs[:120]
        yield pydoc_docs[5]

    target = tmp_path / "new.idx"
    with pytest.raises(DuplicateIdError):
        InvertedIndex.build(docs_then_duplicate(), target, segment_docs=50)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    idx = InvertedIndex.build(pydoc_docs[:120], target)  # a retry just works
    assert len(idx) == 120 and idx.path == target
    (tmp_path / "empty").mkdir()  # an empty folder made for the index is fine too
    assert len(InvertedIndex.build(pydoc_docs[:10], tmp_path / "empty")) == 10


def test_analyse_batch_maps_the_whole_batch_like_one_document_at_a_time(shared_data):
    """Indexing maps a batch's terms to ids in one pass (stop words as a dropped id 0):
    same vocabulary in first-seen order, same ids, same lengths as analysing each document
    on its own, with and without fields (BM25F's per-document path)."""
    import itertools
    from collections import defaultdict

    from retrievo.data import BeirDataset
    from retrievo.index.ingest import analyse_batch, indexed_text
    from retrievo.text import get_analyzer

    analyzer = get_analyzer()
    docs = [(d.doc_id, d.title, d.text, None) for d in itertools.islice(
        BeirDataset(shared_data / "scifact").iter_documents(), 1200)]
    docs[5:5] = [("empty", "", "", None), ("stops", "The", "and of the", None)]
    for lo in range(0, len(docs), 500):
        batch = docs[lo:lo + 500]
        local: defaultdict[str, int] = defaultdict(itertools.count().__next__)
        ids, lengths = [], []
        for _, title, text, _ in batch:
            terms = analyzer(indexed_text(title, text))
            ids.extend(local[t] for t in terms)
            lengths.append(len(terms))
        got = analyse_batch(analyzer, batch, False)
        assert got.terms == list(local)
        assert got.term_ids.dtype == np.int32 and got.term_ids.tolist() == ids
        assert got.lengths.dtype == np.int64 and got.lengths.tolist() == lengths
        with_fields = analyse_batch(analyzer, batch, False, ("title",))
        assert with_fields.term_ids.tolist() == [with_fields.terms.index(t) for t in
                                                 (got.terms[i] for i in ids)]
        assert with_fields.lengths.tolist() == lengths
    assert analyse_batch(analyzer, [], False).term_ids.tolist() == []

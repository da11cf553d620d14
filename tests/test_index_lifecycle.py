"""The shared index life cycle: garbage collection, reader retries, open_index and its
cache, the format registry (exercised by a second, minimal format)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from retrievo.data import PydocCorpus
from retrievo.errors import ConfigError, CorruptIndexError, DuplicateIdError, IndexFormatVersionError
from retrievo.index import InvertedIndex, clear_index_cache, open_index, register_format
from retrievo.index import lifecycle
from retrievo.index.docstore import DocPart, DocStore, docstore_manifest, load_parts
from retrievo.retrieve import BM25
from retrievo.types import Document, Queries

QUERIES = Queries.of(["how do I catch an exception", "list comprehension syntax", "decorators"])


def resigned(manifest: dict) -> dict:
    """``manifest`` as another writer (a plugin format, an older retrievo) would have
    written it: with a valid checksum, so only the edited field is under test."""
    from retrievo.index import lifecycle as _lifecycle

    return {**manifest, "checksum": _lifecycle.manifest_checksum(manifest)}


@pytest.fixture(scope="module")
def pydoc_docs() -> list[Document]:
    return list(PydocCorpus().iter_documents())


def on_disk(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}


def referenced(path: Path) -> set[str]:
    """Every file the current generation names (folders expanded), plus CURRENT and LOCK."""
    manifest = lifecycle.current_snapshot(path).manifest
    names = {"CURRENT", "LOCK", lifecycle.manifest_name(manifest["generation"])}
    for rel in manifest["files"]:
        p = path / rel
        names |= {f.relative_to(path).as_posix() for f in p.rglob("*")} if p.is_dir() else {rel}
    return names


def same_results(a, b) -> None:
    np.testing.assert_array_equal(a.doc_ids, b.doc_ids)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_merge_gives_space_back_at_once(tmp_path, pydoc_docs):
    path = tmp_path / "idx"
    idx = InvertedIndex.build(pydoc_docs, path, segment_docs=100, merge=False)
    deleted = [d.doc_id for d in pydoc_docs[::5]]
    idx.delete(deleted)
    old_segments = set((path / "segments").iterdir())
    assert len(old_segments) == 8 and len(list((path / "deletes").iterdir())) == 8
    before = BM25(idx)(QUERIES)
    idx.merge()
    segments = list((path / "segments").iterdir())
    assert len(segments) == 1 and not old_segments & set(segments)
    assert len(list((path / "docs").iterdir())) == 1
    assert not list(path.glob("deletes/*"))
    assert [p.name for p in path.glob("gen-*.json")] == [lifecycle.manifest_name(idx.generation)]
    assert on_disk(path) == referenced(path)
    reopened = InvertedIndex.open(path)
    same_results(before, BM25(reopened)(QUERIES))
    assert len(reopened) == len(pydoc_docs) - len(deleted)


def test_collection_removes_every_leftover_of_a_dead_writer(tmp_path, pydoc_docs):
    path = tmp_path / "idx"
    idx = InvertedIndex.build(pydoc_docs[:100], path)
    planted_files = ["CURRENT.retrievo-tmp-0a1b2c", "gen-00000002.json.retrievo-tmp-3d4e5f",
                     "gen-00000002.json",  # a manifest written by a writer killed before CURRENT moved
                     "vocab/vocab-00000002.txt.retrievo-tmp-777", "deletes/del-00000002-seg-x.npy.retrievo-tmp"]
    for rel in planted_files:
        (path / rel).parent.mkdir(exist_ok=True)
        (path / rel).write_text("left by a writer that died")
    for folder in ["segments/seg-dead.retrievo-tmp-123456", "docs/part-dead.retrievo-tmp-123456",
                   "segments/seg-complete-but-unpublished", "idx-build.retrievo-tmp-99"]:
        (path / folder).mkdir(parents=True)
        (path / folder / "docs.npy").write_bytes(b"\0" * 64)
    kept_segment = path / "segments" / idx.segments[0].name
    (kept_segment / "docs.npy.retrievo-tmp-5e6f").write_bytes(b"\0")
    assert len(InvertedIndex.open(path)) == 100  # leftovers never confuse a reader
    idx.add(pydoc_docs[100:150])
    assert on_disk(path) == referenced(path)
    assert not [p for p in path.rglob("*") if "retrievo-tmp" in p.name]
    assert len(InvertedIndex.open(path)) == 150


def test_a_failed_add_leaves_nothing_behind_and_the_index_usable(tmp_path, pydoc_docs):
    path = tmp_path / "idx"
    idx = InvertedIndex.build(pydoc_docs[:100], path)
    identity, generation = idx.identity, idx.generation

    def new_then_duplicate():
        yield from pydoc_docs[100:250]  # 60-document segments reach the disk before the error
        yield pydoc_docs[3]

    with pytest.raises(DuplicateIdError):
        idx.add(new_then_duplicate(), segment_docs=60)
    assert on_disk(path) == referenced(path)  # the written segments were collected
    assert (len(idx), idx.generation, idx.identity, len(idx.segments)) == (100, generation, identity, 1)
    assert pydoc_docs[120].doc_id not in idx
    idx.add(pydoc_docs[100:250])  # the same object goes on working
    assert len(InvertedIndex.open(path)) == 250


def test_collection_never_guesses(tmp_path):
    """A manifest without a file list (written before the shared life cycle) or an
    unreadable one means nothing may be deleted."""
    path = tmp_path / "old"
    path.mkdir()
    (path / "CURRENT").write_text("gen-00000001.json\n")
    (path / "gen-00000001.json").write_text(json.dumps({"format": "retrievo-inverted", "format_version": 1,
                                                         "generation": 1, "segments": []}))
    (path / "segments").mkdir()
    (path / "segments" / "seg-a").mkdir()
    assert lifecycle.collect_garbage(path) == []
    (path / "gen-00000001.json").write_text("{not json")
    assert lifecycle.collect_garbage(path) == []
    assert (path / "segments" / "seg-a").is_dir()


def test_reader_retries_when_a_writer_collects_its_generation(tmp_path, pydoc_docs):
    path = tmp_path / "idx"
    InvertedIndex.build(pydoc_docs[:100], path)
    attempts = []

    def load_after_a_concurrent_publish(snapshot):
        attempts.append(snapshot.generation)
        if len(attempts) == 1:  # between resolving CURRENT and opening files, a writer publishes and collects
            InvertedIndex.open(path).add(pydoc_docs[100:130])
        return InvertedIndex.from_snapshot(snapshot)

    idx = lifecycle.open_snapshot(path, load_after_a_concurrent_publish)
    assert attempts == [1, 2]
    assert idx.generation == 2 and len(idx) == 130


def test_real_damage_is_raised_without_retrying(tmp_path, pydoc_docs):
    path = tmp_path / "idx"
    idx = InvertedIndex.build(pydoc_docs[:50], path)
    (path / "docs" / idx.doc_parts[0].name / "ids.txt").unlink()
    attempts = []

    def load(snapshot):
        attempts.append(snapshot.generation)
        return InvertedIndex.from_snapshot(snapshot)

    with pytest.raises(CorruptIndexError, match="ids.txt"):
        lifecycle.open_snapshot(path, load)
    assert attempts == [1]


def test_open_index_dispatches_and_caches_per_generation(tmp_path, pydoc_docs):
    path = tmp_path / "idx"
    InvertedIndex.build(pydoc_docs[:60], path)
    clear_index_cache()
    plain = open_index(path)
    assert isinstance(plain, InvertedIndex) and plain is not open_index(path)
    first = open_index(path, cached=True)
    (tmp_path / "link").symlink_to(path)
    assert open_index(tmp_path / "link", cached=True) is first  # same real path, same object
    assert open_index(str(path), cached=True) is first
    InvertedIndex.open(path).add(pydoc_docs[60:70])  # another writer moves CURRENT
    second = open_index(path, cached=True)
    assert second is not first and second.generation == first.generation + 1 and len(second) == 70
    assert len(first) == 60  # holders of the old object keep their snapshot
    assert open_index(path, cached=True) is second
    clear_index_cache()
    assert open_index(path, cached=True) is not second


def test_unknown_format_version_and_registration_errors(tmp_path, pydoc_docs):
    path = tmp_path / "idx"
    InvertedIndex.build(pydoc_docs[:20], path)
    manifest_path = path / (path / "CURRENT").read_text().strip()
    manifest = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps(resigned({**manifest, "format": "sparse-hologram"})))
    with pytest.raises(CorruptIndexError, match="sparse-hologram"):
        open_index(path)
    with pytest.raises(CorruptIndexError, match="sparse-hologram"):
        InvertedIndex.open(path)
    manifest_path.write_text(json.dumps(resigned({**manifest, "format_version": 1})))  # an index of retrievo <= 0.1
    with pytest.raises(IndexFormatVersionError, match="Rebuild"):
        open_index(path)
    with pytest.raises(ConfigError):
        register_format("broken", "no-colon-here")
    register_format("missing-reader", "retrievo.no_such_module:Reader")
    manifest_path.write_text(json.dumps(resigned({**manifest, "format": "missing-reader"})))
    with pytest.raises(CorruptIndexError, match="cannot be imported"):
        open_index(path)


class IdListIndex:
    """A second format with no search structure at all, written through the shared life
    cycle and document store, to show a new format needs neither copied."""

    FORMAT = "test-id-list"
    FORMAT_VERSION = 3

    def __init__(self, store: DocStore, path: Path, generation: int):
        self.store, self.path, self.generation = store, path, generation

    @classmethod
    def write(cls, path: Path, documents: list[Document]) -> None:
        path.mkdir()
        with lifecycle.writing(path) as txn:
            ids = np.empty(len(documents), dtype=object)
            ids[:] = [d.doc_id for d in documents]
            (path / "docs").mkdir()
            part = DocPart("part-0", ids).write(path / "docs")
            entry, files = docstore_manifest([part], has_text=False)
            txn.publish(cls.FORMAT, cls.FORMAT_VERSION, {"count": len(documents)}, files,
                        identity=part.content_hash(), docstore=entry)

    @classmethod
    def from_snapshot(cls, snapshot: lifecycle.Snapshot, mmap: bool = True) -> "IdListIndex":
        snapshot.require(cls.FORMAT, cls.FORMAT_VERSION)
        parts = load_parts(snapshot.path, snapshot.docstore, mmap)
        return cls(DocStore(parts, has_text=snapshot.docstore["text"]), snapshot.path, snapshot.generation)


def test_another_format_reuses_life_cycle_and_document_store(tmp_path, pydoc_docs):
    register_format(IdListIndex.FORMAT, f"{__name__}:IdListIndex")
    path = tmp_path / "ids"
    IdListIndex.write(path, pydoc_docs[:25])
    opened = open_index(path)
    assert isinstance(opened, IdListIndex) and opened.generation == 1
    assert len(opened.store) == 25 and pydoc_docs[7].doc_id in opened.store
    with pytest.raises(ConfigError, match="without a document store"):
        opened.store.get(pydoc_docs[7].doc_id)
    with pytest.raises(CorruptIndexError, match="test-id-list"):
        InvertedIndex.open(path)

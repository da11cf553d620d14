"""Index integrity (issue 6): readers racing writers, stale writers, failures injected at
every step of build / add / delete / merge / garbage collection (in-process hooks and
SIGKILLs), and a corruption suite that damages every file of an index in every way and
requires each case to be detected or provably harmless."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from retrievo.cli.main import app
from retrievo.errors import CorruptIndexError, IndexConflictError
from retrievo.index import InvertedIndex, lifecycle, open_index
from retrievo.index.atomic import TMP_MARK
from retrievo.index.verify import verify_index
from retrievo.retrieve import BM25
from retrievo.types import Document, Queries

WORDS = ("cancer therapy gene protein cell immune tumour yeast radiation stem antibody folding dynamics "
         "expression response receptor kinase pathway signal membrane").split()
QUERIES = Queries.of(["cancer therapy", "gene expression", "immune receptor signal", "stem cell", "yeast"])


def make_docs(n: int, seed: int, prefix: str = "d") -> list[Document]:
    rng = random.Random(seed)
    return [Document(f"{prefix}{i}", " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))),
                     title=rng.choice(WORDS)) for i in range(n)]


DOCS = make_docs(120, 1)
MORE = make_docs(30, 2, "m")


class InjectedFault(Exception):
    """Raised by the test hook at the chosen step."""


def results(index) -> list[tuple[list[str], list[float]]]:
    return [(r.doc_ids.tolist(), r.scores.tolist()) for r in BM25(index)(QUERIES)]


def on_disk(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()}


def referenced(path: Path) -> set[str]:
    manifest = lifecycle.current_snapshot(path).manifest
    names = {"CURRENT", "LOCK", lifecycle.manifest_name(manifest["generation"])}
    for rel in manifest["files"]:
        p = path / rel
        names |= {f.relative_to(path).as_posix() for f in p.rglob("*")} if p.is_dir() else {rel}
    return names


def assert_clean(path: Path) -> None:
    """Only the current generation's files remain, and disk use is exactly theirs."""
    assert on_disk(path) == referenced(path)
    assert not [p for p in path.rglob("*") if TMP_MARK in p.name]
    assert not list(path.parent.glob(f"{path.name}{TMP_MARK}*"))
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    assert total == sum((path / rel).stat().st_size for rel in referenced(path))


def fail_at(step: str, nth: int = 1):
    seen = {"n": 0}

    def hook(at: str) -> None:
        if at == step:
            seen["n"] += 1
            if seen["n"] == nth:
                raise InjectedFault(step)

    return lifecycle.fault_hook(hook)


# ---------------------------------------------------------------- case 5: races
@pytest.mark.parametrize("pause_at", ["open.after_current", "open.after_manifest"])
def test_a_slow_reader_is_never_told_a_healthy_index_is_corrupt(tmp_path, pause_at):
    path = tmp_path / "idx"
    InvertedIndex.build(DOCS[:40], path, segment_docs=20, merge=False)
    extra = iter(make_docs(60, 3, "r"))
    for _ in range(5):
        writer = open_index(path)
        landed = {"n": 0}

        def two_commits(step: str) -> None:
            if step == pause_at and not landed["n"]:
                landed["n"] = 1
                with lifecycle.fault_hook(lambda s: None):
                    added = writer.add([next(extra), next(extra)])
                    writer.delete(added[:1])
        with lifecycle.fault_hook(two_commits):
            reader = open_index(path)
        assert reader.generation == lifecycle.read_generation(path)
        assert results(reader) == results(open_index(path))


def test_a_reader_that_loses_every_race_gets_a_conflict_not_corruption(tmp_path):
    path = tmp_path / "idx"
    InvertedIndex.build(DOCS[:20], path)
    writer = open_index(path)
    extra = iter(make_docs(40, 4, "x"))

    def always_commit(step: str) -> None:
        if step == "open.after_current":
            with lifecycle.fault_hook(lambda s: None):
                writer.add([next(extra)])
    with lifecycle.fault_hook(always_commit), pytest.raises(IndexConflictError) as raised:
        open_index(path)
    assert not isinstance(raised.value, CorruptIndexError)


def test_a_stale_writer_gets_a_conflict(tmp_path):
    path = tmp_path / "idx"
    InvertedIndex.build(DOCS[:20], path)
    a, b = open_index(path), open_index(path)
    a.add(MORE[:2])
    for change in (lambda: b.add(MORE[2:4]), lambda: b.delete([DOCS[0].doc_id])):
        with pytest.raises(IndexConflictError):
            change()
    assert len(open_index(path)) == 22


# ---------------------------------------------------------------- fault injection
PUBLISH = ["publish.after_vocab", "publish.before_manifest", "publish.before_current", "publish.after_current"]
GC = ["gc.before", "gc.remove"]
STEPS = {
    "add": ["ingest.after_segment", "ingest.after_part", "atomic_dir.before_rename", *PUBLISH, *GC],
    "delete": ["delete.applied", "publish.after_deletes", *PUBLISH, *GC],
    "merge": ["merge.after_part", "merge.after_segment", "atomic_dir.before_rename", *PUBLISH, *GC],
}
AFTER_PUBLISH = {"publish.after_current", *GC}


def apply(op: str, index) -> None:
    if op == "add":
        index.add(MORE, segment_docs=10)
    elif op == "delete":
        index.delete([d.doc_id for d in DOCS[::7]])
    else:
        index.merge()


@pytest.mark.parametrize("op,step", [(op, step) for op, steps in STEPS.items() for step in steps])
def test_a_failure_at_any_step_keeps_the_last_commit(tmp_path, op, step):
    path = tmp_path / "idx"
    InvertedIndex.build(DOCS, path, segment_docs=40, merge=False)
    open_index(path).delete([DOCS[1].doc_id])  # tombstones too, so merge has work
    before = results(open_index(path))
    expected = InvertedIndex.build(DOCS, segment_docs=40, merge=False)
    expected.delete([DOCS[1].doc_id])
    apply(op, expected)
    after = results(expected)
    index = open_index(path)
    with fail_at(step), pytest.raises(InjectedFault):
        apply(op, index)
    reopened = open_index(path)
    assert results(reopened) == (after if step in AFTER_PUBLISH else before)
    assert verify_index(path).ok
    reopened.add([Document("next", "cancer therapy again")])  # the next successful commit cleans up
    assert_clean(path)


@pytest.mark.parametrize("step", ["ingest.after_segment", "ingest.after_part", "atomic_dir.before_rename",
                                  "publish.before_manifest", "publish.before_current", "create.before_rename"])
def test_a_failed_first_build_leaves_nothing(tmp_path, step):
    path = tmp_path / "idx"
    with fail_at(step), pytest.raises(InjectedFault):
        InvertedIndex.build(DOCS, path, segment_docs=40)
    assert not path.exists() and not list(tmp_path.iterdir())
    InvertedIndex.build(DOCS, path, segment_docs=40)
    assert_clean(path)


SCRIPT = textwrap.dedent("""
    import sys
    from retrievo.index import InvertedIndex, open_index
    from retrievo.types import Document
    path, mode, tag = sys.argv[1], sys.argv[2], sys.argv[3]
    docs = [Document(f"{tag}-{i}", f"cancer therapy number {i} " * (1 + i % 5)) for i in range(400)]
    if mode == "build":
        InvertedIndex.build(docs, path, segment_docs=50, workers=1)
    else:
        index = open_index(path)
        for n in range(40):
            index.add(docs[n * 10:(n + 1) * 10], workers=1)
            index.delete([docs[n * 10].doc_id])
            if n % 5 == 4:
                index.merge()
""")


def run_killed(args: list[str], env_step: str | None = None, kill_after: float | None = None) -> None:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if env_step:
        env[lifecycle.FAULT_ENV] = env_step
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, *args], env=env, stderr=subprocess.PIPE)
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert proc.returncode in (-signal.SIGKILL, 0), proc.stderr.read().decode()[-2000:]


def test_sigkill_at_steps_and_at_random_moments(tmp_path):
    path = tmp_path / "idx"
    # a build killed just before its final rename leaves a full copy beside the index ...
    run_killed([str(path), "build", "b"], env_step="create.before_rename")
    assert not path.exists() and list(tmp_path.glob(f"idx{TMP_MARK}*"))
    InvertedIndex.build(DOCS, path)  # ... which the next build removes
    assert_clean(path)
    committed = results(open_index(path))
    for step in ("publish.before_current", "publish.after_vocab:2", "gc.remove:3", "merge.after_segment"):
        run_killed([str(path), "update", step], env_step=step)
        index = open_index(path)
        assert verify_index(path).ok
        committed = results(index)
        index.add([Document(f"after-{step}", "cancer therapy")])
        assert_clean(path)
    rng = random.Random(7)
    for _ in range(3):
        run_killed([str(path), "update", f"random{_}"], kill_after=rng.uniform(0.8, 2.0))
        index = open_index(path)
        assert verify_index(path).ok and len(results(index)) == len(committed)
        index.add([Document(f"after-random-{_}", "gene expression")])
        assert_clean(path)


# ---------------------------------------------------------------- corruption suite
@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pristine") / "idx"
    InvertedIndex.build(DOCS, path, segment_docs=50, merge=False)
    open_index(path).delete([d.doc_id for d in DOCS[::9]])
    return path


def npy_data_offset(path: Path) -> int:
    with open(path, "rb") as fh:
        np.lib.format.read_magic(fh)
        np.lib.format.read_array_header_1_0(fh)
        return fh.tell()


def edits(rel: str, data: bytes, path: Path):
    """(label, new bytes) for one file: truncations, byte flips, and same-size rewrites
    of array values and of the manifest's fields."""
    yield "empty", b""
    yield "truncated", data[: len(data) // 2]
    yield "one byte short", data[:-1]
    yield "one byte more", data + b"\0"
    for at in sorted({0, len(data) // 3, len(data) // 2, len(data) - 1}):
        if data:
            yield f"flip@{at}", data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:]
    if rel.endswith(".npy"):
        start = npy_data_offset(path)
        arr = np.load(path, allow_pickle=False)
        for label, change in [("+1", lambda a: a.__setitem__(len(a) // 2, a[len(a) // 2] + 1)),
                              ("negate", lambda a: a.__setitem__(-1, -a[-1] if a.dtype != bool else ~a[-1])),
                              ("swap", lambda a: a.__setitem__(slice(0, 2), a[1::-1].copy())),
                              ("zero", lambda a: a.__setitem__(len(a) // 3, 0)),
                              ("huge", lambda a: a.__setitem__(0, np.iinfo(a.dtype).max if a.dtype != bool
                                                              else True))]:
            if len(arr) < 2:
                continue
            changed = arr.copy()
            change(changed)
            yield f"array {label}", data[:start] + changed.tobytes()
    if rel.endswith(".txt"):
        lines = data.split(b"\n")
        if len(lines) > 2:
            lines[0], lines[1] = lines[1], lines[0]
            yield "swapped lines", b"\n".join(lines)
    if rel.startswith("gen-"):
        text = data.decode()
        for old, new in [('"english"', '"englisx"'), ('"porter"', '"porteR"'), ('"num_docs": 1', '"num_docs": 2'),
                         ('"lucene-standard"', '"lucene-standarD"'), ('"n_docs": 5', '"n_docs": 4')]:
            if old in text:
                yield f"manifest {old}->{new}", text.replace(old, new, 1).encode()
        manifest = json.loads(text)
        manifest["payload"]["stats"]["sum_doc_len"] += 1
        yield "manifest stats", json.dumps(manifest, indent=1).encode()


def corruption_cases(pristine: Path):
    for rel in sorted(on_disk(pristine) - {"LOCK"}):
        data = (pristine / rel).read_bytes()
        for label, new in edits(rel, data, pristine / rel):
            if new != data:
                yield rel, label, new


def test_every_corruption_is_detected_or_harmless(pristine, tmp_path):
    baseline = results(open_index(pristine))
    ids = sorted(open_index(pristine).docstore.id_map())
    counts = {"detected on open": 0, "detected by check": 0, "harmless": 0}
    silent = []
    for n, (rel, label, new) in enumerate(corruption_cases(pristine)):
        copy = tmp_path / f"c{n}"
        shutil.copytree(pristine, copy)
        (copy / rel).write_bytes(new)
        try:
            index = open_index(copy)
            got, got_ids = results(index), sorted(index.docstore.id_map())
        except CorruptIndexError:
            counts["detected on open"] += 1
            shutil.rmtree(copy)
            continue
        if got != baseline or got_ids != ids:
            silent.append(f"{rel}: {label}")  # different results with no error on open
        elif not verify_index(copy).ok:
            counts["detected by check"] += 1
        else:
            counts["harmless"] += 1
        shutil.rmtree(copy)
    assert not silent, f"changed results without an error on open: {silent}"
    assert counts["detected on open"] > 100, counts


def test_check_and_verified_open_find_same_size_text_damage(pristine, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(pristine, copy)
    store = next(copy.glob("docs/part-*/store.jsonl"))
    data = bytearray(store.read_bytes())
    at = data.index(b"cancer")
    data[at:at + 6] = b"CANCER"  # same size, still valid JSON: only a checksum can tell
    store.write_bytes(bytes(data))
    open_index(copy)  # the cheap open does not read stored text (rankings do not depend on it)
    with pytest.raises(CorruptIndexError, match="store.jsonl"):
        open_index(copy, verify=True)
    runner = CliRunner()
    result = runner.invoke(app, ["check", str(copy)])
    assert result.exit_code == 1 and "store.jsonl" in result.output and "sha256" in result.output
    result = runner.invoke(app, ["check", str(pristine)])
    assert result.exit_code == 0 and "healthy" in result.output
    result = runner.invoke(app, ["check", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and result.output.startswith("error:")


def test_check_reports_a_missing_current_and_leftovers(pristine, tmp_path):
    copy = tmp_path / "c"
    shutil.copytree(pristine, copy)
    (copy / f"gen-00000009.json{TMP_MARK}-abc").write_text("{}")
    report = verify_index(copy)
    assert report.ok and any("leftover" in n for n in report.notes)
    (copy / "CURRENT").unlink()
    result = CliRunner().invoke(app, ["check", str(copy)])
    assert result.exit_code == 1 and "no CURRENT file" in result.output

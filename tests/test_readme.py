"""The README's Python example runs top to bottom on the real SciFact data.

A README example that does not run is worse than none: readers copy it first. This test
executes the README's ``python`` block as written, with ``../shared/data`` pointed at the
shared data folder and the working directory in a temporary folder (the example writes an
index, a run and a plot there).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_one_python_example():
    blocks = python_blocks(README.read_text(encoding="utf-8"))
    assert len(blocks) == 1 and "../shared/data/scifact" in blocks[0]


@pytest.mark.slow
def test_readme_python_example_runs(shared_data, tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    if not (shared_data / "scifact").is_dir():
        pytest.skip(f"SciFact is not in {shared_data}")
    code = python_blocks(README.read_text(encoding="utf-8"))[0]
    code = code.replace("../shared/data", str(shared_data))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    printed = capsys.readouterr().out
    assert re.search(r"'nDCG@10': 0\.678", printed)  # BM25 on SciFact test, as the reproduction table says
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "bm25.trec.protocol.json").is_file()
    index = namespace["index"]
    assert "new-1" in index and "4983" not in index and len(index.segments) == 1

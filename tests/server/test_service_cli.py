"""``retrievo key`` and ``retrievo serve`` as commands, and the load and fault tools run
briefly against real server processes (always terminated)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from retrievo.cli.main import app

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "OMP_NUM_THREADS": "1"}


@pytest.fixture
def server_process(index_path):
    procs = []

    def start(*extra):
        proc = subprocess.Popen([sys.executable, "-m", "retrievo", "serve", str(index_path), "--port", "0", *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
        procs.append(proc)
        line = proc.stdout.readline()
        m = re.search(r"on (http://127\.0\.0\.1:\d+)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        return proc, m.group(1)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)


def test_key_create_prints_the_key_once_and_stores_its_hash(index_path):
    runner = CliRunner()
    r = runner.invoke(app, ["key", "create", str(index_path), "--scope", "write", "--name", "ci"])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip().splitlines()[0]
    assert re.fullmatch(r"rvk_[0-9a-f]{8}_[A-Za-z0-9_\-]{43}", key)
    stored = (index_path.parent / "animals.keys.json").read_text()
    assert key not in stored and key.split("_")[1] in stored
    listed = runner.invoke(app, ["key", "list", str(index_path)])
    assert key.split("_")[1] in listed.stdout and "write" in listed.stdout and key not in listed.stdout
    bad = runner.invoke(app, ["key", "create", str(index_path), "--scope", "admin"])
    assert bad.exit_code == 2 and "unknown scope" in bad.output
    bad = runner.invoke(app, ["key", "create", str(index_path), "--scope", "read", "--collection", "other"])
    assert bad.exit_code == 2 and "no collection 'other'" in bad.output


def test_serve_command_serves_writes_and_stops_cleanly(index_path, server_process):
    key = CliRunner().invoke(app, ["key", "create", str(index_path), "--scope", "write"]).stdout.strip()
    proc, url = server_process("--pipeline", "fast=bm25 % 3")
    with httpx.Client(base_url=url, timeout=60) as c:
        body = c.post("/v1/search", json={"query": "horse"}).json()
        assert body["pipeline"] == "bm25 % 3" and len(body["results"]) == 3
        r = c.post("/v1/documents", headers={"Authorization": f"Bearer {key}"},
                   json={"documents": [{"doc_id": "cli-1", "text": "a narwhal"}]})
        assert r.status_code == 200
    proc.send_signal(signal.SIGTERM)
    # uvicorn shuts down gracefully, then re-raises the signal it caught, so the exit status says SIGTERM
    assert proc.wait(30) in (0, -signal.SIGTERM)
    assert "Traceback" not in proc.stderr.read()
    from retrievo.index import open_index

    assert "cli-1" in open_index(index_path, verify=True)


def test_serve_refuses_a_missing_index(tmp_path):
    r = CliRunner().invoke(app, ["serve", str(tmp_path / "nothing")])
    assert r.exit_code == 2 and "neither an index folder nor a config file" in r.output


def test_load_tool_reports_throughput_latency_and_errors(index_path, server_process):
    _, url = server_process()
    out = subprocess.run([sys.executable, str(REPO / "bench" / "load_service.py"), "--url", url, "--clients", "2",
                          "--seconds", "1", "--index", str(index_path), "--json"], capture_output=True, text=True,
                         env=ENV, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["errors"] == 0 and result["rps"] > 0 and 0 < result["p50_ms"] <= result["p99_ms"]
    assert result["inprocess_qps"] > 0
    refused = subprocess.run([sys.executable, str(REPO / "bench" / "load_service.py"), "--url",
                              "http://10.1.2.3:8080", "--seconds", "1"], capture_output=True, text=True, env=ENV)
    assert refused.returncode == 2 and "loopback" in refused.stderr


def test_fault_tool_kills_the_server_during_writes(tmp_path):
    out = subprocess.run([sys.executable, str(REPO / "bench" / "fault_service.py"), "--cycles", "2", "--docs", "200",
                          "--writers", "2", "--json"], capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout)
    assert result["cycles"] == 2 and result["lost"] == 0 and result["corrupt"] == 0
    assert result["acknowledged"] > 0


def test_fault_tool_counts_lost_writes_and_damaged_indexes(index_path):
    """The checker the fault tool relies on does find a missing acknowledged add, a
    deleted document that came back, and a damaged file: a 0 it reports means something."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fault_service", REPO / "bench" / "fault_service.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    ledger = tool.Ledger()
    ledger.added(["a1", "a2"])
    assert tool.check(index_path, ledger) == (0, None)
    ledger.added(["never-written"])
    ledger.deleted("a2")  # acknowledged as deleted, but still in the index
    assert tool.check(index_path, ledger) == (2, None)
    segment = next((index_path / "segments").iterdir())
    victim = next(p for p in sorted(segment.rglob("*")) if p.is_file() and p.stat().st_size > 16)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    lost, error = tool.check(index_path, ledger)
    assert error is not None and "CorruptIndexError" in error

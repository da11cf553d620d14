"""The HTTP service over a small index: search, rerank, ask (streamed), documents, auth,
limits, CORS, metrics and live updates with one snapshot per search.

Every server binds 127.0.0.1 on a free port and is stopped by the ``serve`` fixture."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from retrievo.index import open_index
from retrievo.index.lifecycle import fault_hook
from retrievo.server import load_service
from retrievo.server.models import LIMITS

from service_support import corpus


def client(srv, key: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=60)


@pytest.fixture
def svc(index_path):
    service = load_service(index_path)
    service.write_key = service.keys.create("write")
    service.read_key = service.keys.create("read")
    return service


# --------------------------------------------------------------------------- search
def test_search_returns_ranked_results_costs_and_highlights(svc, serve):
    srv = serve(svc)
    with client(srv) as c:
        assert c.get("/health").json() == {"status": "ok", "collections": {"animals": 1}}
        r = c.post("/v1/search", json={"query": "running otter", "k": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["pipeline"] == "bm25" and body["generation"] == 1 and len(body["results"]) == 3
        top = body["results"][0]
        assert top["doc_id"] in {"a3", "a11", "a19", "a27", "a35"}  # odd i with i % 8 == 3: otters running
        scores = [h["score"] for h in body["results"]]
        assert scores == sorted(scores, reverse=True)
        marked = {top["snippet"][s["start"]:s["end"]].lower() for s in top["highlights"]}
        assert marked == {"otter", "running"}
        assert [c["stage"] for c in body["costs"]] == ["bm25"] and body["costs"][0]["seconds"] >= 0
        # the same ranking as the Python API on the same index
        from retrievo import pipeline

        expected = pipeline.parse("bm25", {"index": open_index(svc.collection(None).path)}).search("running otter", 3)
        assert [h["doc_id"] for h in body["results"]] == list(expected.doc_ids)


def test_pipelines_are_allow_listed_and_open_specs_refuse_files(index_path, serve):
    closed = serve(load_service(index_path, pipelines={"bm25": "bm25", "tuned": "bm25(k1=1.2, b=0.5)"}))
    with client(closed) as c:
        assert c.post("/v1/search", json={"query": "cat", "pipeline": "tuned"}).json()["pipeline"] == \
            "bm25(k1=1.2, b=0.5)"
        r = c.post("/v1/search", json={"query": "cat", "pipeline": "bm25(k1=2.0)"})
        assert r.status_code == 403 and "not allowed" in r.json()["error"]["message"]
        cols = c.get("/v1/collections").json()
        assert [p["name"] for p in cols[0]["pipelines"]] == ["bm25", "tuned"]
    opened = serve(load_service(index_path, open_specs=True))
    with client(opened) as c:
        assert c.post("/v1/search", json={"query": "cat", "pipeline": "bm25(k1=2.0) % 5"}).status_code == 200
        for spec in ("bm25(index='/etc')", "bm25(index=../animals)", "bm25 >> cross_encoder(model=/tmp/x)"):
            r = c.post("/v1/search", json={"query": "cat", "pipeline": spec})
            assert r.status_code == 403, (spec, r.text)
        r = c.post("/v1/search", json={"query": "cat", "pipeline": "bm25 >> nosuchstage"})
        assert r.status_code == 400 and "unknown pipeline stage" in r.json()["error"]["message"]


def test_every_registered_stage_is_listed(svc, serve):
    from retrievo.registry import REGISTRY

    with client(serve(svc)) as c:
        names = {s["name"] for s in c.get("/v1/stages").json()}
    assert names == {e.name for e in REGISTRY}


def test_rerank_reorders_given_candidates(svc, serve):
    with client(serve(svc)) as c:
        r = c.post("/v1/rerank", json={"query": "zebra", "candidates": [{"doc_id": "a0"}, {"doc_id": "a4"},
                                                                         {"doc_id": "a12"}], "snippets": True})
        assert r.status_code == 200, r.text
        ids = [h["doc_id"] for h in r.json()["results"]]
        assert ids[0] in {"a4", "a12"} and sorted(ids) == ["a0", "a12", "a4"]
        assert c.post("/v1/rerank", json={"query": "zebra", "candidates": [{"doc_id": "nope"}]}).status_code == 404


def test_bad_requests_are_typed_4xx(svc, serve):
    with client(serve(svc), svc.write_key) as c:
        cases = [
            ("POST", "/v1/search", {"query": ""}, 422),
            ("POST", "/v1/search", {"query": "x" * (LIMITS.max_query_chars + 1)}, 422),
            ("POST", "/v1/search", {"query": "cat", "k": LIMITS.max_k + 1}, 422),
            ("POST", "/v1/search", {"query": "cat", "k": 0}, 422),
            ("POST", "/v1/search", {"query": "cat", "collection": "../animals"}, 422),
            ("POST", "/v1/search", {"query": "cat", "collection": "other"}, 404),
            ("POST", "/v1/search", {"query": "cat", "extra": 1}, 422),
            ("POST", "/v1/documents", {"documents": []}, 422),
            ("POST", "/v1/documents", {"documents": [{"doc_id": "a1", "text": "again"}]}, 409),
            ("POST", "/v1/documents", {"documents": [{"doc_id": "n1", "text": "x"}, {"doc_id": "n1", "text": "y"}]},
             409),
            ("DELETE", "/v1/documents/nope", None, 404),
            ("GET", "/v1/documents/nope", None, 404),
            ("GET", "/v1/documents/a1?collection=..%2Fetc", None, 422),
        ]
        for method, path, body, status in cases:
            r = c.request(method, path, json=body)
            assert r.status_code == status, (method, path, body, r.status_code, r.text)
            assert set(r.json()["error"]) >= {"type", "message"}
        big = {"documents": [{"doc_id": f"b{i}", "text": "w" * 150_000} for i in range(120)]}
        r = c.post("/v1/documents", json=big)
        assert r.status_code == 413
        r = c.post("/v1/search", content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 422


# --------------------------------------------------------------------------- auth
def _write_operations(c) -> list[tuple[str, str]]:
    """Every write operation the OpenAPI schema lists (so a new one cannot escape the test)."""
    ops = []
    for path, item in c.get("/openapi.json").json()["paths"].items():
        for method in item:
            if method in ("post", "put", "patch", "delete") and path not in ("/v1/search", "/v1/rerank", "/v1/ask",
                                                                              "/mcp"):
                ops.append((method.upper(), path))
    return ops


def test_every_write_endpoint_refuses_missing_or_read_only_keys(index_path, serve, tmp_path):
    cfg = tmp_path / "serve.toml"
    cfg.write_text(f'[collections.main]\nindex = "{index_path}"\n[collections.other]\nindex = "{index_path}"\n')
    service = load_service(cfg)
    write_key, read_key = service.keys.create("write"), service.keys.create("read")
    other_key = service.keys.create("write", ["other"])
    srv = serve(service)
    with client(srv) as c:
        ops = _write_operations(c)
        assert sorted(ops) == [("DELETE", "/v1/documents/{doc_id}"), ("POST", "/v1/documents")]
        bodies = {"POST": {"documents": [{"doc_id": "auth1", "text": "an authorised document"}]}}
        for method, path in ops:
            url = path.replace("{doc_id}", "a1")
            for headers, status in [({}, 401), ({"Authorization": "Bearer rvk_00000000_" + "x" * 43}, 401),
                                    ({"Authorization": "Basic " + write_key}, 401),
                                    ({"Authorization": f"Bearer {read_key}"}, 403),
                                    ({"Authorization": f"Bearer {other_key}"}, 403)]:
                r = c.request(method, url, json=bodies.get(method), headers=headers)
                assert r.status_code == status, (method, url, headers, r.text)
                if status == 401:
                    assert r.headers["www-authenticate"].startswith("Bearer")
        # nothing was written by the refused requests
        assert c.get("/v1/documents/a1").status_code == 200
        assert c.get("/v1/documents/auth1").status_code == 404
        ok = {"Authorization": f"Bearer {write_key}"}
        assert c.post("/v1/documents", json=bodies["POST"], headers=ok).status_code == 200
        assert c.delete("/v1/documents/a1", headers=ok).status_code == 200
        # the collection-scoped key writes where it may
        r = c.delete("/v1/documents/a2?collection=other", headers={"Authorization": f"Bearer {other_key}"})
        assert r.status_code == 200, r.text


def test_private_server_needs_a_key_to_read_and_keys_are_hashed(svc, serve):
    svc.private = True
    srv = serve(svc)
    with client(srv) as c:
        assert c.post("/v1/search", json={"query": "cat"}).status_code == 401
        assert c.get("/v1/collections").status_code == 401
        assert c.get("/health").status_code == 200
    with client(srv, svc.read_key) as c:
        assert c.post("/v1/search", json={"query": "cat"}).status_code == 200
    stored = svc.keys.path.read_text()
    assert svc.read_key not in stored and svc.write_key not in stored
    assert oct(svc.keys.path.stat().st_mode & 0o777) == "0o600"
    # a revoked key stops working at once, without a restart
    key_id = svc.read_key.split("_")[1]
    assert svc.keys.revoke(key_id)
    with client(srv, svc.read_key) as c:
        assert c.post("/v1/search", json={"query": "cat"}).status_code == 401


def test_cors_is_off_unless_origins_are_named(svc, serve):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    with client(serve(svc)) as c:
        r = c.options("/v1/search", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
        r = c.post("/v1/search", json={"query": "cat"}, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers
    with client(serve(load_service(svc.collection(None).path), cors_origins=["https://app.example"])) as c:
        r = c.options("/v1/search", headers={**preflight, "Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"


def test_static_files_cannot_escape_the_package(svc, serve):
    with client(serve(svc)) as c:
        page = c.get("/")
        assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
        assert "http://" not in page.text and "https://" not in page.text  # no CDN
        for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fkeys.py"):
            assert c.get(path).status_code == 404, path
        assert c.get("/docs").status_code == 404  # the interactive docs load a CDN: off


# --------------------------------------------------------------------------- ask
def test_ask_streams_pieces_before_the_reader_finishes(index_path, serve, scripted_reader):
    service = load_service(index_path, pipelines={"bm25": "bm25", "qa": "bm25 % 5 >> scripted_reader"})
    srv = serve(service)
    scripted_reader.gate = threading.Event()
    events = []
    with client(srv) as c:
        with c.stream("POST", "/v1/ask", json={"query": "sleeping zebra", "pipeline": "qa"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for block in _sse(r):
                events.append(block)
                if block[0] == "token" and len([e for e in events if e[0] == "token"]) == 1:
                    # the first piece arrived while the reader waits on the gate: it is streamed
                    assert scripted_reader.pieces_sent == ["5 passages"]
                    scripted_reader.gate.set()
    kinds = [e[0] for e in events]
    assert kinds == ["context", "token", "token", "token", "done"]
    context_ids = [h["doc_id"] for h in events[0][1]["results"]]
    done = events[-1][1]
    assert done["answer"] == "".join(e[1]["text"] for e in events if e[0] == "token")
    assert done["answer"] == f"5 passages; first: {context_ids[0]}"
    assert [ct["doc_id"] for ct in done["citations"]] == context_ids[:2]
    assert done["citations"][0]["title"].startswith("Zebra")
    assert [ct["stage"] for ct in done["costs"]] == ["bm25", "scripted_reader"]


def test_ask_without_streaming_and_with_a_plain_reader(index_path, serve, scripted_reader):
    service = load_service(index_path, pipelines={"bm25": "bm25",
                                                  "qa": "bm25 % 3 >> scripted_reader(streaming=false)",
                                                  "reader_only": "scripted_reader"})
    with client(serve(service)) as c:
        r = c.post("/v1/ask", json={"query": "otter", "pipeline": "qa", "stream": False})
        assert r.status_code == 200, r.text
        assert r.json()["answer"].startswith("3 passages; first: a")
        assert c.post("/v1/ask", json={"query": "otter", "pipeline": "bm25"}).status_code == 403
        r = c.post("/v1/ask", json={"query": "otter", "pipeline": "reader_only"})
        assert r.status_code == 400 and "does not start from a query" in r.json()["error"]["message"]
        assert c.post("/v1/search", json={"query": "otter", "pipeline": "qa"}).status_code == 403
        cols = c.get("/v1/collections").json()[0]["pipelines"]
        assert {p["name"]: p["gives"] for p in cols} == {"bm25": "rankings", "qa": "answers",
                                                         "reader_only": "answers"}


def _sse(response):
    buffer = ""
    for chunk in response.iter_text():
        buffer += chunk
        while "\n\n" in buffer:
            block, buffer = buffer.split("\n\n", 1)
            lines = dict(line.split(": ", 1) for line in block.splitlines())
            yield lines["event"], json.loads(lines["data"])


# --------------------------------------------------------------------------- live updates
def test_acknowledged_writes_are_durable_and_searchable(svc, serve):
    srv = serve(svc)
    with client(srv, svc.write_key) as c:
        r = c.post("/v1/documents", json={"documents": [{"doc_id": "q1", "text": "quokka smiles", "title": "Quokka",
                                                         "meta": {"source": "test"}}]})
        assert r.status_code == 200 and r.json()["generation"] == 2
        # visible to the next search (read your writes) and on disk in a fresh open
        assert [h["doc_id"] for h in c.post("/v1/search", json={"query": "quokka"}).json()["results"]] == ["q1"]
        assert "q1" in open_index(svc.collection(None).path)
        assert c.get("/v1/documents/q1").json() == {"collection": "animals", "doc_id": "q1", "title": "Quokka",
                                                   "text": "quokka smiles", "meta": {"source": "test"}}
        assert c.delete("/v1/documents/q1").json()["generation"] == 3
        assert c.post("/v1/search", json={"query": "quokka"}).json()["results"] == []
        assert "q1" not in open_index(svc.collection(None).path)


def test_upsert_replaces_documents_by_id_in_one_commit(svc, serve):
    srv = serve(svc)
    with client(srv, svc.write_key) as c:
        r = c.post("/v1/documents", json={"documents": [{"doc_id": "a3", "text": "a quokka replaced the otter"}]})
        assert r.status_code == 409 and "upsert" in r.json()["error"]["message"]  # a plain add refuses
        r = c.post("/v1/documents", json={"upsert": True, "documents": [
            {"doc_id": "a3", "text": "a quokka replaced the otter"}, {"doc_id": "new1", "text": "quokka twins"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["replaced"] == ["a3"] and body["added"] == ["new1"] and body["generation"] == 2
        assert c.get("/v1/documents/a3").json()["text"] == "a quokka replaced the otter"
        hits = [h["doc_id"] for h in c.post("/v1/search", json={"query": "quokka", "k": 5}).json()["results"]]
        assert sorted(hits) == ["a3", "new1"]
        index = open_index(svc.collection(None).path)
        assert len(index) == 41 and index.generation == 2  # one commit; 40 + 1 new
        # repeated ids within one upsert are refused whole
        r = c.post("/v1/documents", json={"upsert": True, "documents": [{"doc_id": "z", "text": "one"},
                                                                        {"doc_id": "z", "text": "two"}]})
        assert r.status_code == 409
        assert "retrievo_collection_documents_replaced_total{collection=\"animals\"} 1" in c.get("/metrics").text


def test_concurrent_writes_are_group_committed(svc, serve):
    """Writes that arrive while a commit is being published wait and go out together."""
    srv = serve(svc)
    slow = threading.Event()

    def hook(step):
        if step == "publish.before_current" and not slow.is_set():
            slow.set()
            time.sleep(0.5)

    def add(i):
        with client(srv, svc.write_key) as c:
            return c.post("/v1/documents", json={"documents": [{"doc_id": f"g{i}", "text": f"gecko {i}"}]})

    with fault_hook(hook), ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(add, range(16)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    col = svc.collection(None)
    assert col.stats["documents_added"] == 16 and col.stats["commits"] < 8, col.stats
    index = open_index(col.path)
    assert all(f"g{i}" in index for i in range(16))


def test_each_search_sees_one_consistent_snapshot(svc, serve):
    """Batches of 5 documents sharing a word land while searches run; every search sees
    whole batches only, one generation always shows the same count, counts never shrink
    with the generation, and each acknowledged batch is visible to the next search."""
    srv = serve(svc)
    batch, batches = 5, 12
    seen: dict[int, int] = {}
    errors = []
    stop = threading.Event()

    def searcher():
        with client(srv) as c:
            while not stop.is_set():
                body = c.post("/v1/search", json={"query": "wombat", "k": 1000, "snippets": False}).json()
                n = len(body["results"])
                if n % batch and n != batch * batches - 1:  # whole batches, or all of them less the deleted one
                    errors.append(f"partial batch: {n} documents")
                if seen.setdefault(body["generation"], n) != n:
                    errors.append(f"generation {body['generation']} showed {seen[body['generation']]} and {n}")

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        with client(srv, svc.write_key) as c:
            for b in range(batches):
                docs = [{"doc_id": f"w{b}-{j}", "text": f"wombat burrow {b} {j}"} for j in range(batch)]
                assert c.post("/v1/documents", json={"documents": docs}).status_code == 200
                found = c.post("/v1/search", json={"query": "wombat", "k": 1000}).json()["results"]
                assert len(found) == batch * (b + 1)
            assert c.delete("/v1/documents/w0-0").status_code == 200
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert not errors, errors[:5]
    counts = [seen[g] for g in sorted(seen)]
    if counts[-1] == batch * batches - 1:  # the last generation is the deletion
        counts.pop()
    assert counts == sorted(counts) and len(seen) > 2


def test_a_snapshot_outlives_later_writes(svc):
    """A search that took its snapshot before a write reads that generation to the end."""
    col = svc.collection(None)
    before = col.snapshot()
    col.add([corpus(1)[0].__class__("late", "a late lynx")]).result(30)
    col.delete(["a1"]).result(30)
    after = col.snapshot()
    assert after.generation == before.generation + 2
    assert "late" not in before and "a1" in before and "late" in after and "a1" not in after
    old = col.pipeline("bm25", before, 5).search("lynx")
    assert len(old) == 0
    assert list(col.pipeline("bm25", after, 5).search("lynx").doc_ids) == ["late"]
    col.close()


def test_a_failed_commit_is_not_acknowledged_and_the_next_write_works(svc, serve):
    srv = serve(svc)

    def fail(step):
        if step == "publish.before_current":
            raise OSError("simulated I/O error while publishing")

    with client(srv, svc.write_key) as c:
        with fault_hook(fail):
            r = c.post("/v1/documents", json={"documents": [{"doc_id": "f1", "text": "ferret"}]})
        assert r.status_code == 500 and r.json()["error"]["type"] == "internal"
        assert c.post("/v1/search", json={"query": "ferret"}).json()["results"] == []
        assert "f1" not in open_index(svc.collection(None).path, verify=True)
        r = c.post("/v1/documents", json={"documents": [{"doc_id": "f1", "text": "ferret"}]})
        assert r.status_code == 200, r.text
        assert [h["doc_id"] for h in c.post("/v1/search", json={"query": "ferret"}).json()["results"]] == ["f1"]


def test_small_commits_are_merged_once_segments_pile_up(svc, monkeypatch):
    import retrievo.server.collection as collection_module

    monkeypatch.setattr(collection_module, "MERGE_SEGMENTS", 3)
    col = svc.collection(None)
    for i in range(5):
        col.add([corpus(1)[0].__class__(f"m{i}", f"marmot {i}")]).result(30)
    assert col.stats["merges"] >= 1
    index = open_index(col.path, verify=True)
    assert len(index.segments) <= 3 and all(f"m{i}" in index for i in range(5)) and len(index) == 45
    assert [d for d in col.pipeline("bm25", col.snapshot(), 10).search("marmot").doc_ids] == \
        sorted(f"m{i}" for i in range(5))
    col.close()


def test_metrics_count_requests_by_route(svc, serve):
    with client(serve(svc)) as c:
        c.post("/v1/search", json={"query": "cat"})
        c.get("/v1/documents/a1")
        c.get("/v1/documents/a2")
        text = c.get("/metrics").text
    assert 'retrievo_requests_total{method="POST",route="/v1/search",status="200"} 1' in text
    assert 'retrievo_requests_total{method="GET",route="/v1/documents/{doc_id:path}",status="200"} 2' in text
    assert 'retrievo_collection_generation{collection="animals"} 1' in text
    assert 'retrievo_request_seconds_count{method="POST",route="/v1/search"} 1' in text


def test_a_document_that_cannot_be_stored_fails_alone(svc, serve):
    """A write that fails inside a group commit (here: the store cannot encode its
    metadata, which only the Python API can send) does not take the requests committed
    with it down; over HTTP such metadata is refused before it reaches the writer."""
    from retrievo.types import Document

    col = svc.collection(None)
    first_commit = threading.Event()

    def hold(step):  # keep the first commit busy so the next three queue up as one group
        if step == "publish.before_current" and not first_commit.is_set():
            first_commit.set()
            time.sleep(0.5)

    with fault_hook(hold):
        blocker = col.add([Document("blocker", "bison")])
        assert first_commit.wait(30)
        good = col.add([Document("ok-1", "okapi in the forest")])
        bad = col.add([Document("bad-1", "badger", meta={"k": "\ud800"})])
        also_good = col.add([Document("ok-2", "okapi again")])
        assert blocker.result(30) == 2
        assert good.result(30) >= 3 and also_good.result(30) >= 3
        with pytest.raises(UnicodeEncodeError):
            bad.result(30)
    index = open_index(col.path, verify=True)
    assert "ok-1" in index and "ok-2" in index and "bad-1" not in index
    with client(serve(svc), svc.write_key) as c:
        for meta in ({"k": "\ud800"}, {"x": float("nan")}):
            r = c.post("/v1/documents", content=json.dumps({"documents": [{"doc_id": "bad-2", "text": "x",
                                                                           "meta": meta}]}),
                       headers={"Content-Type": "application/json"})
            assert r.status_code == 422 and "meta" in r.text, r.text
    col.close()


def test_search_filter_applies_before_top_k(tmp_path, serve):
    from retrievo.index import InvertedIndex
    from retrievo.types import Document

    docs = [Document(d.doc_id, d.text, title=d.title, meta={"year": 2000 + i, "kind": "even" if i % 2 == 0 else "odd"})
            for i, d in enumerate(corpus())]
    InvertedIndex.build(docs, tmp_path / "dated")
    srv = serve(load_service(tmp_path / "dated"))
    with client(srv) as c:
        r = c.post("/v1/search", json={"query": "otter running river", "k": 5,
                                       "filter": "year >= 2030 and kind = 'odd'"})
        assert r.status_code == 200, r.text
        got = [h["doc_id"] for h in r.json()["results"]]
        # every odd document from 2030 on matches the river words: exactly 5 of the 5 that qualify
        assert sorted(got) == sorted(f"a{i}" for i in range(30, 40) if i % 2)
        unfiltered = [h["doc_id"] for h in c.post("/v1/search", json={"query": "otter running river",
                                                                      "k": 5}).json()["results"]]
        assert unfiltered != got
        for bad in ("nosuchfield = 1", "year >= 'soon'", "year >="):
            r = c.post("/v1/search", json={"query": "otter", "filter": bad})
            assert r.status_code == 400, (bad, r.text)
            assert r.json()["error"]["type"].endswith("Error")

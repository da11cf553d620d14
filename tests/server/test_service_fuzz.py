"""Property-based fuzzing against the service's own OpenAPI schema: bodies generated from
each operation's request schema (valid ones, to reach the code behind validation) and
arbitrary JSON (to hit validation), with random path and query values and random keys.
Whatever arrives, the answer is never a 5xx, and every error has the typed error shape."""

from __future__ import annotations

import copy
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from retrievo.server import create_app, load_service

from fastapi.testclient import TestClient  # noqa: E402

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=30),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                                 max_size=4), max_leaves=12)
TEXT = st.text(max_size=40) | st.sampled_from(["a1", "a2", "..", "../etc/passwd", "%2e%2e", "animals", "x/y"])


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    from retrievo.index import InvertedIndex

    from service_support import corpus

    path = tmp_path_factory.mktemp("fuzz") / "animals"
    InvertedIndex.build(corpus(), path)
    service = load_service(path, open_specs=True)
    keys = {"write": service.keys.create("write"), "read": service.keys.create("read")}
    app = create_app(service)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, keys, app.openapi()
    service.close()


def _operations(openapi) -> list[tuple[str, str, dict]]:
    ops = []
    for path, item in openapi["paths"].items():
        for method, op in item.items():
            ops.append((method.upper(), path, op))
    return ops


def from_schema(schema: dict, components: dict, depth: int = 0) -> st.SearchStrategy:
    """Values for the JSON-schema subset pydantic writes (objects, arrays, anyOf, enums,
    strings, numbers, booleans, null, local $refs), near and across the limits it states:
    lengths and bounds are drawn from just inside to just outside them."""
    if "$ref" in schema:
        return st.deferred(lambda: from_schema(components[schema["$ref"].rsplit("/", 1)[-1]], components, depth + 1))
    if "anyOf" in schema:
        return st.one_of([from_schema(s, components, depth) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        if depth > 6 or not props:
            return st.dictionaries(st.text(max_size=8), JSON, max_size=3)
        fields = {k: from_schema(v, components, depth + 1) for k, v in props.items()}
        return st.fixed_dictionaries({k: fields[k] for k in props if k in required},
                                     optional={k: fields[k] for k in props if k not in required})
    if kind == "array":
        lo, hi = schema.get("minItems", 0), schema.get("maxItems", 5)
        return st.lists(from_schema(schema.get("items", {}), components, depth + 1), min_size=0,
                        max_size=min(max(lo + 2, 3), hi + 1, 8))
    if kind == "string" and "pattern" in schema:  # names: mostly the served one, sometimes a bad one
        return st.sampled_from(["animals", "animals", "animals", "other", "../animals", "", "a" * 65]) | st.text()
    if kind == "string":
        lo, hi = schema.get("minLength", 0), schema.get("maxLength", 60)
        sizes = st.sampled_from(sorted({0, lo, max(lo, 1), min(hi, 30), hi, hi + 1}))
        words = st.sampled_from(["cat", "otter", "running", "a1", "a2", "bm25", "bm25 % 3", "bm25 >> rm3 >> bm25",
                                 "animals", "../animals", "bm25(index=/etc)", "zebra sleeping"])
        return words | sizes.flatmap(lambda n: st.text(min_size=n, max_size=n) if n <= 2000
                                     else st.just("q" * n))
    if kind == "integer":
        lo, hi = schema.get("minimum", -5), schema.get("maximum", 2000)
        return st.sampled_from([lo - 1, lo, lo + 1, hi, hi + 1]) | st.integers(lo - 2, hi + 2)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([0.0, -1.0, 1e308])
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return JSON


def _body_strategy(op, openapi):
    content = (op.get("requestBody") or {}).get("content", {}).get("application/json")
    if content is None:
        return JSON
    typed = from_schema(copy.deepcopy(content["schema"]), openapi["components"]["schemas"])
    return st.one_of(typed, typed, typed, JSON)  # mostly schema-shaped, so requests get past validation


def test_openapi_fuzz_finds_no_server_errors(fuzz_app):
    client, keys, openapi = fuzz_app
    ops = _operations(openapi)
    assert {(m, p) for m, p, _ in ops} >= {("POST", "/v1/search"), ("POST", "/v1/documents"),
                                           ("DELETE", "/v1/documents/{doc_id}"), ("POST", "/v1/ask"),
                                           ("POST", "/v1/rerank"), ("GET", "/health"), ("POST", "/mcp")}
    failures = []
    statuses: dict[tuple[str, str], set[int]] = {}

    @st.composite
    def requests(draw):
        method, path, op = draw(st.sampled_from(ops))
        url = path
        for param in op.get("parameters", []):
            if param["in"] == "path":
                value = draw(TEXT.filter(lambda t: t not in ("", ".", "..")))
                url = url.replace("{" + param["name"] + "}", quote(value, safe=""))
        query = {p["name"]: draw(TEXT) for p in op.get("parameters", []) if p["in"] == "query" and draw(st.booleans())}
        body = draw(_body_strategy(op, openapi)) if method in ("POST", "PUT", "PATCH") else None
        key = draw(st.sampled_from([None, keys["write"], keys["write"], keys["write"], keys["read"],
                                    "rvk_deadbeef_" + "x" * 40, "garbage"]))
        return method, url, query, body, key, path

    # one example of each outcome the coverage check below needs, so it never depends on luck
    w = keys["write"]
    @settings(max_examples=800, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @example(("POST", "/v1/search", {}, {"query": "otter"}, None, "/v1/search"))
    @example(("POST", "/v1/search", {}, {"query": ""}, None, "/v1/search"))
    @example(("POST", "/v1/documents", {}, {"documents": [{"doc_id": "ex-1", "text": "an example"}]}, w,
              "/v1/documents"))
    @example(("POST", "/v1/documents", {}, {"documents": []}, None, "/v1/documents"))
    @given(requests())
    def run(req):
        method, url, query, body, key, template = req
        statuses.setdefault((method, template), set())
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        r = client.request(method, url, params=query, json=body, headers=headers)
        statuses[(method, template)].add(r.status_code)
        if r.status_code >= 500:
            failures.append((method, url, query, body, r.status_code, r.text[:300]))
        elif r.status_code >= 400 and url != "/mcp":
            error = r.json().get("error")
            assert isinstance(error, dict) and {"type", "message"} <= set(error), (method, url, r.text)

    run()
    assert not failures, failures[:5]
    # the generated requests got past validation too: the code behind it was exercised
    assert 200 in statuses[("POST", "/v1/search")] and 422 in statuses[("POST", "/v1/search")], statuses
    assert statuses[("POST", "/v1/documents")] & {200, 409} and 401 in statuses[("POST", "/v1/documents")]

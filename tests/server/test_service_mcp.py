"""The MCP tools, driven by the official ``mcp`` client over Streamable HTTP: the same
operations and the same request schemas as the REST API."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from retrievo.server import load_service
from retrievo.server.mcp import tool_list
from retrievo.server.models import FetchRequest, SearchRequest

mcp = pytest.importorskip("mcp", reason="the mcp client package is not installed: pip install 'retrievo[test]'")


def _a(obj, name: str):
    """A result field by its snake_case name (mcp 2) or camelCase alias (mcp 1)."""
    if hasattr(obj, name):
        return getattr(obj, name)
    head, *rest = name.split("_")
    return getattr(obj, head + "".join(w.title() for w in rest))


async def _session(url: str, body, headers: dict[str, str] | None = None):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    kwargs = {}
    if headers:
        import httpx2

        kwargs["http_client"] = httpx2.AsyncClient(headers=headers, timeout=60)
    async with streamable_http_client(url + "/mcp", **kwargs) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            init = await session.initialize()
            return await body(session, init)


def test_mcp_client_lists_and_calls_the_tools(index_path, serve, scripted_reader):
    service = load_service(index_path, pipelines={"bm25": "bm25", "qa": "bm25 % 4 >> scripted_reader"})
    srv = serve(service)

    async def body(session, init):
        assert _a(init, "server_info").name == "retrievo"
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert set(tools) == {"search", "fetch_document", "ask"}
        found = await session.call_tool("search", {"query": "sleeping falcon", "k": 2})
        doc = await session.call_tool("fetch_document", {"doc_id": "a5"})
        answer = await session.call_tool("ask", {"query": "falcon", "pipeline": "qa"})
        bad = await session.call_tool("fetch_document", {"doc_id": "missing"})
        return tools, found, doc, answer, bad

    tools, found, doc, answer, bad = asyncio.run(_session(srv.url, body))
    # one schema: the tools' input schemas are the REST request models'
    assert _a(tools["search"], "input_schema")["properties"] == SearchRequest.model_json_schema()["properties"]
    assert _a(tools["fetch_document"], "input_schema")["properties"] == FetchRequest.model_json_schema()["properties"]
    # the same answers as REST
    rest = httpx.post(srv.url + "/v1/search", json={"query": "sleeping falcon", "k": 2}).json()
    assert not _a(found, "is_error")
    assert [h["doc_id"] for h in _a(found, "structured_content")["results"]] == [h["doc_id"] for h in rest["results"]]
    assert json.loads(found.content[0].text)["results"] == _a(found, "structured_content")["results"]
    assert _a(doc, "structured_content")["title"] == "Falcon 5"
    assert _a(answer, "structured_content")["answer"].startswith("4 passages; first: ")
    assert _a(bad, "is_error") and "UnknownIdError" in bad.content[0].text


def test_mcp_validates_arguments_and_respects_private_servers(index_path, serve):
    service = load_service(index_path, private=True)
    key = service.keys.create("read")
    srv = serve(service)

    def rpc(payload, headers=None):
        return httpx.post(srv.url + "/mcp", json=payload, headers=headers or {}, timeout=60)

    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "search", "arguments":
                                                                          {"query": "cat", "k": 2}}}
    refused = rpc(call).json()
    assert refused["error"]["code"] == -32001
    ok = rpc(call, {"Authorization": f"Bearer {key}"}).json()
    assert len(ok["result"]["structuredContent"]["results"]) == 2
    invalid = rpc({**call, "params": {"name": "search", "arguments": {"query": "", "k": 5000}}},
                  {"Authorization": f"Bearer {key}"}).json()
    assert invalid["error"]["code"] == -32602 and "k" in invalid["error"]["message"]
    assert rpc({"jsonrpc": "2.0", "id": 1, "method": "nope"}).json()["error"]["code"] == -32601
    assert rpc({"jsonrpc": "2.0", "method": "notifications/initialized"}).status_code == 202
    assert httpx.post(srv.url + "/mcp", content=b"{", timeout=10).status_code == 400

    async def body(session, init):
        return [t.name for t in (await session.list_tools()).tools]

    assert asyncio.run(_session(srv.url, body, {"Authorization": f"Bearer {key}"})) == \
        [t["name"] for t in tool_list()]

"""Model Context Protocol tools over the Streamable HTTP transport (``POST /mcp``).

The tools are the service's own operations with the REST API's own request models:
``search`` takes :class:`SearchRequest`, ``fetch_document`` :class:`FetchRequest`, ``ask``
:class:`AskRequest` (answered whole: MCP tool results are not streamed). Their input
schemas are those models' JSON schemas and their arguments are validated by the same
models, so an agent and a REST client see one contract.

The endpoint is stateless JSON-RPC 2.0: every POST carries one message (or a batch) and is
answered with ``application/json``, which the transport allows and every MCP client
accepts; notifications get 202. Authentication is the REST rule: with a private server
the tools need a read key in ``Authorization``. No tool fetches a URL.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError

from retrievo.errors import RetrievoError
from retrievo.server.models import AskRequest, FetchRequest, SearchRequest

PROTOCOL_VERSIONS = ("2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05")

#: tool name -> (request model, service method, description)
TOOLS: dict[str, tuple[type[BaseModel], str, str]] = {
    "search": (SearchRequest, "search", "Search a collection: the top k documents for a query, with scores, "
               "highlighted snippets and per-stage costs."),
    "fetch_document": (FetchRequest, "fetch", "Fetch one stored document (title, text, metadata) by its id."),
    "ask": (AskRequest, "ask", "Answer a question from a collection with a pipeline that ends in a reader; "
            "the answer cites document ids."),
}


def tool_list() -> list[dict[str, Any]]:
    out = []
    for name, (model, _, description) in TOOLS.items():
        schema = model.model_json_schema()
        schema.pop("title", None)
        if name == "ask":
            schema["properties"].pop("stream", None)  # MCP results come whole
        out.append({"name": name, "description": description, "inputSchema": schema})
    return out


def _result(id_: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "result": result}


def _error(id_: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "error": {"code": code, "message": message}}


def add_mcp_route(app, service, authorize: Callable[..., Any]) -> None:
    """Add ``POST /mcp`` (and a 405 ``GET``: this server opens no server-to-client stream)."""

    async def handle(message: Any, request: Request) -> dict[str, Any] | None:
        if not isinstance(message, dict) or message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"),
                                                                                               str):
            return _error(message.get("id") if isinstance(message, dict) else None, -32600, "invalid request")
        id_, method, params = message.get("id"), message["method"], message.get("params") or {}
        if "id" not in message:  # a notification (initialized, cancelled...): nothing to answer
            return None
        if not isinstance(params, dict):
            return _error(id_, -32602, "params must be an object")
        if method == "initialize":
            asked = params.get("protocolVersion")
            version = asked if asked in PROTOCOL_VERSIONS else PROTOCOL_VERSIONS[0]
            from retrievo.server.app import _version

            return _result(id_, {"protocolVersion": version, "capabilities": {"tools": {"listChanged": False}},
                                 "serverInfo": {"name": "retrievo", "version": _version()},
                                 "instructions": "Search collections with `search`, read a hit with "
                                                 "`fetch_document`, answer questions with `ask`."})
        if method == "ping":
            return _result(id_, {})
        if method == "tools/list":
            return _result(id_, {"tools": tool_list()})
        if method == "tools/call":
            name, args = params.get("name"), params.get("arguments") or {}
            if name not in TOOLS:
                return _error(id_, -32602, f"unknown tool {name!r}; tools: {', '.join(TOOLS)}")
            model, method_name, _ = TOOLS[name]
            try:
                req = model.model_validate({**args, "stream": False} if name == "ask" else args)
                authorize(request, "read", req.collection)
                data = await run_in_threadpool(getattr(service, method_name), req)
            except ValidationError as exc:
                return _error(id_, -32602, f"invalid arguments for {name}: {exc.errors(include_url=False)}")
            except RetrievoError as exc:  # a tool error the agent can read and act on
                return _result(id_, {"content": [{"type": "text", "text": f"{type(exc).__name__}: {exc}"}],
                                     "isError": True})
            except Exception as exc:
                from retrievo.server.app import APIError

                if isinstance(exc, APIError):
                    return _error(id_, -32001, exc.message)
                raise
            return _result(id_, {"content": [{"type": "text", "text": json.dumps(data)}],
                                 "structuredContent": data, "isError": False})
        return _error(id_, -32601, f"method {method!r} not found")

    @app.post("/mcp", tags=["mcp"], summary="MCP (JSON-RPC 2.0 over Streamable HTTP)")
    async def mcp(request: Request):
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return JSONResponse(_error(None, -32700, "parse error"), status_code=400)
        if isinstance(body, list):
            answers = [a for a in [await handle(m, request) for m in body] if a is not None]
            return JSONResponse(answers) if answers else Response(status_code=202)
        answer = await handle(body, request)
        return Response(status_code=202) if answer is None else JSONResponse(answer)

    @app.get("/mcp", include_in_schema=False)
    async def mcp_stream():
        return Response(status_code=405, headers={"Allow": "POST"})

    @app.delete("/mcp", include_in_schema=False)
    async def mcp_end():
        return Response(status_code=405, headers={"Allow": "POST"})


__all__ = ["TOOLS", "add_mcp_route", "tool_list"]

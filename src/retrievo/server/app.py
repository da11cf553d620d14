"""The FastAPI app: routes, API keys, errors, limits, metrics and the web page.

``create_app(service)`` builds it; :func:`serve_in_thread` runs one on a free loopback port
(tests, notebooks); ``retrievo serve`` runs one in the foreground.

Security, and why: write endpoints need a ``write`` key (``Authorization: Bearer KEY``),
answered 401 without a valid key and 403 with a read-only one or one scoped to other
collections; with ``private=True`` reading needs a key too. CORS is off unless origins are
named, so a page on another site cannot drive the API from a visitor's browser. Request
bodies are capped before they are read. Collections and pipelines are names looked up in
the server's tables, never paths; request specs may not name files or models (see
:class:`~retrievo.server.collection.Collection.resolve`), and nothing fetches a URL a client
sent. The page is static files from the package with a same-origin content security policy.
The interactive docs pages are off (they load scripts from a CDN); ``/openapi.json`` is
served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from retrievo.serving import ServerThread, bind
from retrievo.serving import serve_in_thread as _serve_in_thread
from retrievo.errors import (ConfigError, CorruptIndexError, DiskFullError, DuplicateIdError, EmptyQueryError,
                             IndexConflictError, IndexError_, IndexLockedError, PipelineSpecError, ResourceError, RetrievoError, StageInputError,
                             UnknownIdError)
from retrievo.server.collection import NotWritableError, PipelineNotAllowedError
from retrievo.server.keys import KeyRecord
from retrievo.server.metrics import Metrics
from retrievo.server.models import (LIMITS, NAME_PATTERN, AddDocumentsRequest, AskRequest, AskResponse,
                                    CollectionInfo, DocumentOut, ErrorResponse, FetchRequest, RerankRequest,
                                    SearchRequest, SearchResponse, WriteResponse)
from retrievo.server.service import Service, UnknownCollectionError

log = logging.getLogger("retrievo.server")
STATIC = resources.files("retrievo.server") / "static"
PAGE_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"


class APIError(Exception):
    """An answer with a status, a type and a message (the body is ``{"error": ...}``)."""

    def __init__(self, status: int, type_: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, headers


#: typed errors of the library -> HTTP status (first match wins, so subclasses come first)
STATUS = (
    (PipelineNotAllowedError, 403), (UnknownCollectionError, 404), (UnknownIdError, 404), (DuplicateIdError, 409),
    (NotWritableError, 409), (PipelineSpecError, 400), (StageInputError, 400), (EmptyQueryError, 400),
    (IndexConflictError, 503), (IndexLockedError, 503), (DiskFullError, 507), (CorruptIndexError, 500),
    (IndexError_, 500), (ConfigError, 400), (ResourceError, 400),
)


def _error(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)


class _BodyLimit:
    """Refuse bodies over ``limit`` bytes (413) by their declared length, and stop reading
    ones that grow past it, so a client cannot make the server buffer gigabytes."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or ()).get(b"content-length")
        too_big = _error(413, "body_too_large", f"request bodies are limited to {self.limit} bytes")
        if length is not None:
            try:
                if int(length) > self.limit:
                    return await too_big(scope, receive, send)
            except ValueError:
                return await _error(400, "bad_request", "bad Content-Length")(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge()
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await too_big(scope, receive, send)


class _TooLarge(Exception):
    pass


class _Observe:
    """Metrics by route template and status; security headers on every answer."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
                if not scope["path"].startswith("/v1/") and scope["path"] != "/mcp":
                    headers.append((b"content-security-policy", PAGE_CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or ("/static" if scope["path"].startswith("/static/")
                                                        else "unmatched")
            self.metrics.observe(scope.get("method", ""), template, status, time.perf_counter() - start)


class _Route(APIRoute):
    """Routes that answer an unexpected exception with the typed 500 body themselves: left
    to Starlette's outermost handler, it would also close the client's connection."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def route(request: Request):
            try:
                return await handler(request)
            except (StarletteHTTPException, RequestValidationError, RetrievoError, APIError, _TooLarge):
                raise
            except Exception:
                log.exception("unexpected error in %s %s", request.method, request.url.path)
                return _error(500, "internal", "internal error (see the server log)")

        return route


def create_app(service: Service, *, cors_origins: tuple[str, ...] | list[str] = (), mcp: bool = True) -> FastAPI:
    """The app over ``service``; ``cors_origins`` (default none) enables CORS for them."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await run_in_threadpool(service.close)  # finish queued writes before the process ends

    app = FastAPI(title="retrievo", version=_version(), docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Search, rerank and ask over retrievo collections. Write endpoints need an API key "
                              "with the write scope (`Authorization: Bearer KEY`).",
                  responses={400: {"model": ErrorResponse}, 401: {"model": ErrorResponse},
                             403: {"model": ErrorResponse}, 404: {"model": ErrorResponse},
                             413: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
    app.router.route_class = _Route
    app.state.service = service
    app.state.metrics = metrics

    # ------------------------------------------------------------------ errors
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return _error(exc.status, exc.type, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, kind, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", ""))} for e in exc.errors()]
        message = "; ".join(f"{'.'.join(d['loc'])}: {d['msg']}" for d in details[:5])
        return JSONResponse({"error": {"type": "validation", "message": message, "details": details}},
                            status_code=422)

    @app.exception_handler(RetrievoError)
    async def _typed(request: Request, exc: RetrievoError):
        for cls, status in STATUS:
            if isinstance(exc, cls):
                if status >= 500:
                    log.error("request failed: %s", exc)
                return _error(status, type(exc).__name__, str(exc))
        return _error(400, type(exc).__name__, str(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error")
        return _error(500, "internal", "internal error (see the server log)")

    # ------------------------------------------------------------------ auth
    def authorize(request: Request, scope: str, collection: str | None) -> KeyRecord | None:
        name = service.collection(collection).name  # 404 for an unknown collection
        header = request.headers.get("authorization")
        challenge = {"WWW-Authenticate": 'Bearer realm="retrievo"'}
        if header is None:
            if scope == "write" or service.private:
                raise APIError(401, "unauthorized", f"this endpoint needs an API key with the {scope} scope "
                               "(Authorization: Bearer KEY; make one with `retrievo key create`)", challenge)
            return None
        kind, _, token = header.partition(" ")
        record = service.keys.check(token.strip()) if service.keys is not None and kind.lower() == "bearer" else None
        if record is None:
            raise APIError(401, "unauthorized", "invalid API key", challenge)
        if not record.allows(scope, name):
            what = "read-only" if scope == "write" and record.scope != "write" else "not valid for this collection"
            raise APIError(403, "forbidden", f"this key is {what}: {scope} access to collection {name!r} refused")
        return record

    def write_key_present(request: Request) -> None:
        """Runs before the body is validated: a write without a usable key is answered 401
        whatever its body, so the schema's checks are not a way to probe an endpoint."""
        header = request.headers.get("authorization")
        kind, _, token = (header or "").partition(" ")
        if header is None or kind.lower() != "bearer" or service.keys is None or service.keys.check(token.strip()) \
                is None:
            raise APIError(401, "unauthorized", "this endpoint needs an API key with the write scope "
                           "(Authorization: Bearer KEY; make one with `retrievo key create`)",
                           {"WWW-Authenticate": 'Bearer realm="retrievo"'})

    def collection_param(collection: str | None = Query(None, pattern=NAME_PATTERN,
                                                        description="collection (default: the first)")):
        return collection

    # ------------------------------------------------------------------ routes
    @app.get("/health", tags=["service"])
    def health() -> dict[str, Any]:
        """Liveness and the generation each collection serves."""
        return {"status": "ok", "collections": {n: int(c.snapshot().generation)
                                                for n, c in service.collections.items()}}

    @app.get("/v1/collections", tags=["service"], response_model=list[CollectionInfo])
    def list_collections(request: Request):
        if service.private:
            authorize(request, "read", None)
        return [c.info() for c in service.collections.values()]

    @app.get("/v1/stages", tags=["service"])
    def stages(request: Request) -> list[dict[str, Any]]:
        """Every registered stage (built-in and plugins) with its options: what a spec may use."""
        if service.private:
            authorize(request, "read", None)
        from retrievo.registry import REGISTRY

        return [{"name": e.name, "kind": e.kind, "help": e.help, "example": e.example,
                 "options": [{"name": o.name, "type": o.type, "default": o.default if not isinstance(o.default, tuple)
                              else list(o.default), "help": o.help} for o in (e.options or ())]}
                for e in REGISTRY]

    @app.post("/v1/search", tags=["search"], response_model=SearchResponse)
    async def search(req: SearchRequest, request: Request):
        authorize(request, "read", req.collection)
        return await run_in_threadpool(service.search, req)

    @app.post("/v1/rerank", tags=["search"], response_model=SearchResponse)
    async def rerank(req: RerankRequest, request: Request):
        authorize(request, "read", req.collection)
        return await run_in_threadpool(service.rerank, req)

    @app.post("/v1/ask", tags=["search"], response_model=AskResponse,
              responses={200: {"content": {"text/event-stream": {}}, "description":
                               "with stream=true (default): events context, token..., done (or error)"}})
    async def ask(req: AskRequest, request: Request):
        authorize(request, "read", req.collection)
        prepared = await run_in_threadpool(service.prepare_ask, req)
        if not req.stream:
            done = None
            for event, data in await run_in_threadpool(lambda: list(service.ask_events(req, prepared))):
                if event == "done":
                    done = data
            return done

        def events():
            try:
                for event, data in service.ask_events(req, prepared):
                    yield f"event: {event}\ndata: {json.dumps(data)}\n\n"
            except Exception as exc:  # the status line is sent: report in the stream
                log.exception("ask failed while streaming")
                message = str(exc) if isinstance(exc, RetrievoError) else "internal error (see the server log)"
                yield f"event: error\ndata: {json.dumps({'type': type(exc).__name__, 'message': message})}\n\n"

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/v1/documents/{doc_id:path}", tags=["documents"], response_model=DocumentOut)
    async def fetch(request: Request, doc_id: str = Path(min_length=1, max_length=512),
                    collection: str | None = Depends(collection_param)):
        authorize(request, "read", collection)
        return await run_in_threadpool(service.fetch, FetchRequest(doc_id=doc_id, collection=collection))

    @app.post("/v1/documents", tags=["documents"], response_model=WriteResponse,
              dependencies=[Depends(write_key_present)])
    async def add_documents(req: AddDocumentsRequest, request: Request):
        """Add documents (or, with ``upsert``, add or replace them by id in one commit);
        answered once they are durable (fsync'd, published) and searchable."""
        authorize(request, "write", req.collection)
        col, future = service.add_future(req)
        result = await asyncio.wrap_future(future)
        if req.upsert:  # (generation, ids that existed before)
            generation, replaced = result
            return {"collection": col.name, "generation": generation, "replaced": sorted(replaced),
                    "added": [d.doc_id for d in req.documents if d.doc_id not in replaced]}
        return {"collection": col.name, "generation": result, "added": [d.doc_id for d in req.documents]}

    @app.delete("/v1/documents/{doc_id:path}", tags=["documents"], response_model=WriteResponse,
                dependencies=[Depends(write_key_present)])
    async def delete_document(request: Request, doc_id: str = Path(min_length=1, max_length=512),
                              collection: str | None = Depends(collection_param)):
        """Delete a document; answered once the deletion is durable and searches no longer see it."""
        authorize(request, "write", collection)
        col, future = service.delete_future(collection, doc_id)
        generation = await asyncio.wrap_future(future)
        return {"collection": col.name, "generation": generation, "deleted": [doc_id]}

    @app.get("/v1/stats", tags=["service"])
    def stats(request: Request, collection: str | None = Depends(collection_param)) -> dict[str, Any]:
        if service.private:
            authorize(request, "read", collection)
        return service.stats(collection)

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    def prometheus(request: Request):
        if service.private:
            authorize(request, "read", None)
        return PlainTextResponse(metrics.render(service.collections),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    if mcp:
        from retrievo.server.mcp import add_mcp_route

        add_mcp_route(app, service, authorize)

    # ------------------------------------------------------------------ the page
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(str(STATIC / "index.html"), media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    # outermost first: body limit before anything reads, then metrics and headers
    asgi: Any = app
    if cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(_Observe, metrics=metrics)
    app.add_middleware(_BodyLimit, limit=LIMITS.max_body_bytes)
    return asgi


def _version() -> str:
    from retrievo import __version__

    return __version__


def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, ready_timeout: float = 30.0) -> ServerThread:
    """Run ``app`` on ``host:port`` (0: a free port) in a daemon thread; returns once it
    accepts connections."""
    return _serve_in_thread(app, host, port, lifespan="on", name="retrievo-serve", ready_timeout=ready_timeout)


__all__ = ["APIError", "ServerThread", "bind", "create_app", "serve_in_thread"]

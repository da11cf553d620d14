"""``retrievo serve`` and ``retrievo key``: the service's commands, registered onto the main
typer app by :func:`register` (kept apart from ``cli/main.py`` so the service's options
live with the service)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from retrievo.errors import MissingExtraError, RetrievoError

key_app = typer.Typer(name="key", help="API keys of a served index or config (hashed at rest).",
                      no_args_is_help=True, add_completion=False)


def _fail(exc: BaseException) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _require_serve() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"serve needs fastapi and uvicorn ({exc}); install them with "
                                "`pip install 'retrievo[serve]'`") from exc


def serve(
    target: Path = typer.Argument(..., help="An index folder, or a TOML config of named collections."),
    host: str = typer.Option("127.0.0.1", help="Address to bind; loopback by default (see --private and keys "
                             "before exposing it)."),
    port: int = typer.Option(8080, help="Port to listen on (0: any free port; the chosen one is printed)."),
    pipeline: Optional[list[str]] = typer.Option(None, "--pipeline", "-p", help="An allowed pipeline as "
                                                 "NAME=SPEC (repeatable; the first is the default). Default: "
                                                 "bm25 and bm25 >> rm3 >> bm25 on a lexical index."),
    open_specs: Optional[bool] = typer.Option(None, "--open-specs/--no-open-specs", help="Accept any pipeline "
                                              "spec in requests whose options name no file, model or text."),
    private: Optional[bool] = typer.Option(None, "--private/--public", help="Reading needs a key too "
                                           "(writing always does)."),
    keys: Optional[Path] = typer.Option(None, help="Key file (default: <index or config>.keys.json beside it)."),
    cors_origin: Optional[list[str]] = typer.Option(None, "--cors-origin", help="Allow browser pages from this "
                                                    "origin to call the API (repeatable; default: none)."),
) -> None:
    """Serve collections over HTTP: search, rerank, ask (streamed), document add/delete, stats, Prometheus
    /metrics, MCP tools at /mcp, OpenAPI at /openapi.json and a search page at /."""
    try:
        _require_serve()
        import uvicorn

        from retrievo.server.app import create_app
        from retrievo.server.config import load_service, parse_pipelines
        from retrievo.serving import bind, is_loopback

        service = load_service(target, pipelines=parse_pipelines(pipeline), open_specs=open_specs,
                               private=private, keys=keys)
        if not is_loopback(host):
            typer.secho(f"warning: listening on {host}, not loopback: anyone who reaches it can "
                        f"{'use keys to ' if service.private else ''}search; writes need a write key",
                        fg=typer.colors.YELLOW, err=True)
        for collection in service.collections.values():
            collection.warm()
        app = create_app(service, cors_origins=cors_origin or ())
        sock = bind(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        names = ", ".join(service.collections)
        typer.echo(f"serving {names} on http://{shown}:{bound} (page /, API /v1, MCP /mcp, metrics /metrics)")
        sys.stdout.flush()
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=10))
        server.run(sockets=[sock])
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@key_app.command("create")
def key_create(
    target: Path = typer.Argument(..., help="The index folder or config the key is for."),
    scope: str = typer.Option(..., help="read (search, fetch, ask) or write (also add and delete documents)."),
    collection: Optional[list[str]] = typer.Option(None, "--collection", "-c", help="Limit the key to these "
                                                   "collections (repeatable; default: all)."),
    name: str = typer.Option("", help="A label to recognise the key by."),
    keys: Optional[Path] = typer.Option(None, help="Key file (default: <index or config>.keys.json beside it)."),
) -> None:
    """Make an API key and print it once (only its hash is stored)."""
    from retrievo.errors import ConfigError
    from retrievo.server.config import key_store_for

    try:
        store, known = key_store_for(target, keys)
        unknown = [c for c in collection or () if c not in known]
        if unknown:
            raise ConfigError(f"no collection {unknown[0]!r} in {target}; it serves {', '.join(known)}")
        key = store.create(scope, collection or None, name)
    except (RetrievoError, OSError) as exc:
        _fail(exc)
    typer.echo(key)
    typer.secho(f"{scope} key stored (hashed) in {store.path}; it is shown only now.", err=True)


@key_app.command("list")
def key_list(
    target: Path = typer.Argument(..., help="The index folder or config."),
    keys: Optional[Path] = typer.Option(None, help="Key file (default: beside the target)."),
) -> None:
    """List key ids, scopes and collections (never the keys)."""
    from retrievo.server.config import key_store_for

    try:
        store, _ = key_store_for(target, keys)
        for r in store.records():
            cols = ",".join(r.collections) if r.collections is not None else "*"
            typer.echo(f"{r.id}  {r.scope:<5}  {cols}  {r.created}  {r.name}")
    except (RetrievoError, OSError) as exc:
        _fail(exc)


@key_app.command("revoke")
def key_revoke(
    target: Path = typer.Argument(..., help="The index folder or config."),
    key_id: str = typer.Argument(..., help="The key's id (the 8 characters after rvk_)."),
    keys: Optional[Path] = typer.Option(None, help="Key file (default: beside the target)."),
) -> None:
    """Revoke a key; a running server refuses it from its next request."""
    from retrievo.server.config import key_store_for

    try:
        store, _ = key_store_for(target, keys)
        if not store.revoke(key_id):
            raise typer.BadParameter(f"no key {key_id!r}")
        typer.echo(f"revoked {key_id}")
    except (RetrievoError, OSError) as exc:
        _fail(exc)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``key`` to the main app."""
    app.command("serve")(serve)
    app.add_typer(key_app, name="key")


__all__ = ["register"]

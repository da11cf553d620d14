"""Fixtures of the service tests: small indexes in temporary folders, servers on free
loopback ports that are always stopped, and a scripted reader stage (registered for the
test only) so ``ask`` is tested without a language model."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from retrievo.index import InvertedIndex  # noqa: E402
from retrievo.registry import REGISTRY, Option, StageEntry  # noqa: E402
from service_support import ScriptedReader, corpus  # noqa: E402


@pytest.fixture
def index_path(tmp_path):
    path = tmp_path / "animals"
    InvertedIndex.build(corpus(), path)
    return path


@pytest.fixture
def scripted_reader():
    entry = StageEntry("scripted_reader", lambda ctx, streaming=True: ScriptedReader(ctx["index"], streaming),
                       "test reader", "reader", (Option("streaming", "bool", True, "stream pieces"),))
    REGISTRY.add(entry)
    ScriptedReader.gate, ScriptedReader.pieces_sent = None, []
    yield ScriptedReader
    REGISTRY.entries.pop("scripted_reader", None)
    ScriptedReader.gate = None


@pytest.fixture
def serve():
    """``serve(service, **app_options) -> ServerThread``; every server is stopped at the end."""
    from retrievo.server import create_app, serve_in_thread

    started = []

    def start(service, **options):
        srv = serve_in_thread(create_app(service, **options))
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()

"""``retrievo serve``: search, rerank and ask over HTTP and MCP, with a web page.

:func:`load_service` opens an index folder or a config of several collections;
:func:`create_app` builds the FastAPI app over it; :func:`serve_in_thread` runs one on a
free loopback port. Nothing in the library imports this package: it is a shell over the
Python API (pipelines from spec strings through the registry, the index life cycle).
"""

from retrievo.server.app import ServerThread, create_app, serve_in_thread
from retrievo.server.collection import Collection
from retrievo.server.config import load_service
from retrievo.server.keys import KeyStore
from retrievo.server.service import Service

__all__ = ["Collection", "KeyStore", "ServerThread", "Service", "create_app", "load_service", "serve_in_thread"]

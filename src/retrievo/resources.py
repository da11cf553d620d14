"""Named resources (indexes, later models): how a pipeline spec refers to them.

A pipeline is a value: ``str(p)`` must rebuild ``p`` in this process or another (a CLI, a
server worker, a Ray task). Stages therefore never hold a resource anonymously; they name
it in their spec (``bm25(index='sf.idx')``) and open it through :func:`open_resource`, a
per-process cache, so ten stages naming one index share one opened copy.

* An on-disk resource is named by its path and opened by the opener registered for its
  kind (``"index"`` → :func:`retrievo.index.open_index`, imported only when first used, so
  this core module imports no index or model code).
* An in-memory resource (an index built without a path) has no path: it gets a name
  ``memory:<kind>-<token>`` valid in this process. Pickling a pipeline carries such
  resources by value and registers them under the same names in the receiving process
  (see :meth:`retrievo.pipeline.Stage.__reduce_ex__`); a spec string alone cannot bring
  them to another process, and naming one there is a :class:`ResourceError` that says so.
"""

from __future__ import annotations

import os
import threading
import uuid
import weakref
from importlib import import_module
from typing import Any

from retrievo.errors import ResourceError

MEMORY_PREFIX = "memory:"

#: kind → "module:function" that opens a resource of that kind by name (path)
OPENERS: dict[str, str] = {
    "index": "retrievo.index:open_index",
}

_lock = threading.Lock()
_by_name: "weakref.WeakValueDictionary[str, Any]" = weakref.WeakValueDictionary()
_names: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()
_strong: dict[str, Any] = {}  # objects that cannot be weakly referenced


def is_memory_name(name: str) -> bool:
    return str(name).startswith(MEMORY_PREFIX)


def resource_name(obj: Any, kind: str) -> str:
    """The name a spec uses for ``obj``: its path when it lives on disk, otherwise a
    ``memory:`` name registered for this process."""
    path = getattr(obj, "path", None)
    if path is not None:
        return os.fspath(path)
    with _lock:
        try:
            name = _names.get(obj)
        except TypeError:
            name = next((n for n, o in _strong.items() if o is obj), None)
        if name is None:
            name = f"{MEMORY_PREFIX}{kind}-{uuid.uuid4().hex[:12]}"
            _register_locked(name, obj)
        return name


def _register_locked(name: str, obj: Any) -> None:
    try:
        _by_name[name] = obj
        _names[obj] = name
    except TypeError:
        _strong[name] = obj


def register_memory(name: str, obj: Any) -> None:
    """Make ``obj`` available under ``name`` in this process (used when unpickling).

    A name that already resolves here keeps its object: unpickling a pipeline in the
    process that pickled it then shares the live index instead of replacing it with a
    copy (which would vanish, with the name, once the copy is collected)."""
    with _lock:
        if _by_name.get(name) is not None or name in _strong:
            return
        _register_locked(name, obj)


def memory_object(name: str) -> Any:
    with _lock:
        obj = _by_name.get(name) or _strong.get(name)
    if obj is None:
        raise ResourceError(
            f"{name!r} names an in-memory resource of another process (or one that no longer exists); "
            "save the index to a folder (`index.save(path)` or `retrievo index`) and name its path instead")
    return obj


def check_resource(kind: str, name: str) -> None:
    """Cheap existence check done when a spec is parsed, before anything is built."""
    if is_memory_name(name):
        memory_object(name)
        return
    if kind == "index" and not os.path.exists(name):
        raise ResourceError(f"no index at {name!r}: build one with `retrievo index SOURCE {name}`")


def open_resource(kind: str, name: str) -> Any:
    """Open (or fetch from this process's cache) the resource ``name`` of ``kind``."""
    if is_memory_name(name):
        return memory_object(name)
    target = OPENERS.get(kind)
    if target is None:
        raise ResourceError(f"no opener for resources of kind {kind!r}; known kinds: {', '.join(OPENERS)}")
    module, _, attr = target.partition(":")
    opener = getattr(import_module(module), attr)
    return opener(name, cached=True)


__all__ = ["MEMORY_PREFIX", "OPENERS", "check_resource", "is_memory_name", "memory_object", "open_resource",
           "register_memory", "resource_name"]

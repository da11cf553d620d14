"""Fixtures of the training tests: the tiny BEIR folder and the tiny causal LM of
train_fixtures.py, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_fixtures import write_tiny_beir, write_tiny_bert, write_tiny_causal_lm


@pytest.fixture(scope="session")
def tiny_beir(tmp_path_factory) -> Path:
    return write_tiny_beir(tmp_path_factory.mktemp("tiny-beir"))


@pytest.fixture(scope="session")
def tiny_causal_lm(tmp_path_factory) -> Path:
    return write_tiny_causal_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))

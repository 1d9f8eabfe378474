"""Fixtures of the method tests (builders and reference math live in tests/methods/reference.py)."""

import pytest

from tests.methods.reference import make_tiny


@pytest.fixture(scope="session")
def tiny(tmp_path_factory):
    """The tiny 3-class text task with its WordPiece tokenizer (built once per session)."""
    return make_tiny(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One teacher store per test module: each teacher (or assistant) is fine-tuned once there."""
    return tmp_path_factory.mktemp("cache")

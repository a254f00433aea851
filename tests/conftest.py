"""Shared fixtures. Real data is read from ../shared/data (beside the checkout) and tests skip when absent."""

from __future__ import annotations

import os
import pathlib

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("MEDTF_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_path(name: str) -> pathlib.Path:
    """Path of ``../shared/data/<name>``; skips the test with a clear reason when it is absent."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {name!r} not found at {path} (set MEDTF_SHARED_DATA or place shared/ beside the repo)")
    return path


@pytest.fixture
def shared_data():
    return shared_path

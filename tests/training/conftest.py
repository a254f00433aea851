"""Fixtures for the training tests; the helpers live in ``training_helpers``."""

from __future__ import annotations

import pytest
from training_helpers import make_records


@pytest.fixture
def tiny_records(tmp_path):
    return make_records(tmp_path / "records")

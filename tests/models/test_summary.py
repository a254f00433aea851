"""docs/models.md's parameter table agrees with freshly built models (cheap rows in the default run)."""

from __future__ import annotations

import pathlib
import re

import pytest

pytest.importorskip("keras")

from medtf.models.summary import STANDARD_CONFIGS, markdown_table, parameter_counts  # noqa: E402

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "models.md"
CHEAP = ["efficientnet b0 (ImageNet head)", "unet 2D depth 4, 32 filters, 2 classes",
         "attention_mil (1024-d tile embeddings)", "restoration_unet 2D (denoise)", "simple_cnn 2D",
         "densenet3d_cbam 121, k=32 (nodule, binary)"]


def _doc_rows() -> dict[str, int]:
    rows = {}
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| (.+?) \| `\w+` \| .+? \| ([\d,]+) \| [\d,]+ \|$", line)
        if m:
            rows[m.group(1)] = int(m.group(2).replace(",", ""))
    return rows


def test_doc_lists_every_standard_config():
    assert set(_doc_rows()) == set(STANDARD_CONFIGS)


@pytest.mark.parametrize("label", CHEAP)
def test_doc_counts_match_built_models(label):
    (row,) = parameter_counts([label])
    assert _doc_rows()[label] == row["params"]


@pytest.mark.slow
def test_whole_table_matches():
    assert markdown_table(parameter_counts()) in DOC.read_text()

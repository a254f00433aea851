"""Recipes: configs load and build their models; preparers produce the documented data from real files."""

from __future__ import annotations

import json
import os
import pathlib
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
SHARED_DATA = pathlib.Path(os.environ.get("MEDTF_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO / "data_tools"))

CONFIGS = {
    "pneumonia_cxr/config.yaml": ((64, 64, 1), "binary"),
    "pneumonia_cxr/efficientnet.yaml": ((64, 64, 1), "binary"),
    "diabetic_retinopathy/config.yaml": ((72, 72, 3), "multiclass"),
    "lung_nodule_ct/config.yaml": ((32, 32, 32, 1), "binary"),
    "lung_nodule_ct/adrenal_3d.yaml": ((28, 28, 28, 1), "binary"),
    "em_membrane/config.yaml": ((256, 256, 1), "segmentation"),
    "brain_tumor_mri/config.yaml": ((128, 128, 2), "segmentation"),
}
RECIPES = ("pneumonia_cxr", "lung_nodule_ct", "diabetic_retinopathy", "brain_tumor_mri", "em_membrane", "ct_denoising")


def _shared(name):
    p = SHARED_DATA / name
    if not p.exists():
        pytest.skip(f"real data {name!r} not found at {p}")
    return p


@pytest.mark.parametrize("path", sorted(CONFIGS))
def test_config_loads_and_model_builds(path):
    from medtf.training.config import load_config
    from medtf.training.trainer import build_model

    shape, task = CONFIGS[path]
    cfg = load_config(REPO / "recipes" / path)
    assert cfg.task == task
    assert pathlib.Path(cfg.records).is_relative_to(REPO)  # resolved against the recipe folder, inside the repo
    model = build_model(cfg, shape)
    out = model.output_shape if not isinstance(model.output_shape, list) else model.output_shape[0]
    n = int(cfg.data.num_classes)
    expected = {"binary": 1, "multiclass": n, "ordinal": n - 1, "segmentation": n}[task]
    assert out[-1] == expected
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"


@pytest.mark.parametrize("name", RECIPES)
def test_readme_states_data_metric_citation_result_and_commands(name):
    text = (REPO / "recipes" / name / "README.md").read_text()
    for heading in ("## Data", "## Labels", "## Metric", "## Citation", "## Result", "## Commands"):
        assert heading in text, f"{name}/README.md lacks {heading!r}"
    assert "```bash" in text


def test_isbi2012_preparer(tmp_path):
    from prepare_isbi2012 import prepare

    m = prepare(_shared("isbi2012_em_membrane"), tmp_path / "rec")
    assert {k: v["examples"] for k, v in m["splits"].items()} == {"train": 21, "val": 3, "test": 6}
    from medtf.records.reader import load

    e = next(iter(load(tmp_path / "rec", "test")))
    mask = e["mask"].numpy()
    assert e["image"].shape == (512, 512, 1) and mask.shape == (512, 512)
    assert 0.15 < mask.mean() < 0.30  # membranes are ~22% of the pixels (SOURCE.md)


def test_isbi2012_context_channels_are_the_neighbouring_sections(tmp_path):
    import cv2

    from prepare_isbi2012 import prepare, with_context

    src = _shared("isbi2012_em_membrane")
    m = prepare(src, tmp_path / "rec", tile=256, context=1)
    assert {k: v["examples"] for k, v in m["splits"].items()} == {"train": 84, "val": 3, "test": 6}
    from medtf.records.reader import load

    section = lambda i: cv2.imread(str(src / "train" / "image" / f"{i}.png"), cv2.IMREAD_GRAYSCALE)  # noqa: E731
    tests = [e["image"].numpy() for e in load(tmp_path / "rec", "test")]
    assert tests[0].shape == (512, 512, 3)
    for ch, i in enumerate((23, 24, 25)):  # test slice 24: validation slice 23's image, itself, slice 25
        np.testing.assert_array_equal(tests[0][..., ch], section(i))
    np.testing.assert_array_equal(tests[-1][..., 2], section(29))  # the stack's last section repeats
    tile = next(iter(load(tmp_path / "rec", "train")))["image"].numpy()
    np.testing.assert_array_equal(tile, with_context([section(i) for i in (0, 1)], 0, 1)[:256, :256])
    with pytest.raises(ValueError, match="context"):
        prepare(src, tmp_path / "bad", context=-1)


def test_lidc_patches_centre_on_the_annotated_nodule(tmp_path):
    from nodule_patches import consensus_nodules, lidc_examples, parse_lidc_xml

    src = _shared("tcia_lidc_idri_0001_ct_subset")
    marks = parse_lidc_xml(src / "069.xml")
    assert len({m["reader"] for m in marks}) == 4
    nods = consensus_nodules(marks, (0.703125, 0.703125))
    big = [n for n in nods if n["large"]]
    assert len(big) == 1 and big[0]["readers"] == 4 and big[0]["malignancy"] >= 4
    assert -125.0 <= big[0]["center_xyz_px"][2] <= -105.0  # SOURCE.md: z -125..-105
    exs, info = lidc_examples(src, min_readers=1, spacing=1.5, size=24, negatives=2, seed=0)
    assert info["positives"] == 1 and [e["label"] for e in exs] == [(1,), (0,), (0,)]
    centre = [np.asarray(e["image"])[9:15, 9:15, 9:15].mean() for e in exs]
    assert centre[0] > -200 and max(centre[1:]) < -500  # soft-tissue nodule vs aerated lung


def test_phantom_nodule_patches(tmp_path):
    from medtf.synthetic import write_ct_phantoms
    from nodule_patches import phantom_examples

    ph = write_ct_phantoms(tmp_path / "ph", 2, 1, size=128, n_slices=24, seed=1, positive_fraction=1.0,
                           nodule_radius_mm=(7.0, 8.0), max_nodules=1)
    exs = phantom_examples(ph.root, spacing=1.5, size=16, negatives=1, seed=0)
    pos = [np.asarray(e["image"])[7:9, 7:9, 7:9].mean() for e in exs if e["label"] == (1,)]  # ±1.5 mm of the centre
    neg = [np.asarray(e["image"])[7:9, 7:9, 7:9].mean() for e in exs if e["label"] == (0,)]
    assert len(pos) == 2 and len(neg) >= 2
    assert min(pos) > -150 and max(neg) < -600


def test_ct_denoising_noise_level(tmp_path):
    from prepare_ct_denoising import HU_RANGE, prepare

    counts = prepare(_shared("tcia_lidc_idri_0001_ct_subset"), tmp_path / "d.npz", sigma_hu=60.0)
    assert counts == {"train": 28, "val": 4, "test": 9}
    d = np.load(tmp_path / "d.npz")
    diff = (d["test_noisy"] - d["test_clean"]) * (HU_RANGE[1] - HU_RANGE[0])
    clean_hu = d["test_clean"] * (HU_RANGE[1] - HU_RANGE[0]) + HU_RANGE[0]
    water = (clean_hu > -100) & (clean_hu < 100)
    assert 50 < diff[water].std() < 110  # 60 HU x (1 + 0.5 x ~1) in soft tissue
    assert abs(diff[water].mean()) < 5


def test_benchmark_results_have_the_issue_keys():
    path = REPO / "benchmarks" / "results" / "recipes.json"
    if not path.exists():
        pytest.skip("benchmarks/results/recipes.json not written yet (python benchmarks/recipes.py)")
    res = json.loads(path.read_text())
    keys = {"pneumonia_cxr": ("test_auc", "test_accuracy", "int8_delta_auc"),
            "diabetic_retinopathy": ("test_auc", "test_accuracy", "test_kappa"),
            "adrenal_3d": ("test_auc", "test_accuracy"), "em_membrane": ("test_dice",),
            "brain_tumor_mri": ("whole_tumor_dice",), "ct_denoising": ("psnr_gain_vs_nlm_db",)}
    for recipe, ks in keys.items():
        if recipe in res:
            for k in ks:
                assert np.isfinite(res[recipe][k]), f"{recipe}.{k}"


#: recipes.json entry → (README that must quote it, keys quoted to 3 decimals)
QUOTED = {
    "pneumonia_cxr": ("pneumonia_cxr", ("test_auc", "test_accuracy")),
    "diabetic_retinopathy": ("diabetic_retinopathy", ("test_auc", "test_accuracy", "test_kappa")),
    "adrenal_3d": ("lung_nodule_ct", ("test_auc", "test_accuracy")),
    "lung_nodule_ct": ("lung_nodule_ct", ("phantom_test_auc",)),
    "em_membrane": ("em_membrane", ("test_dice",)),
    "brain_tumor_mri": ("brain_tumor_mri", ("whole_tumor_dice",)),
}


def test_readmes_quote_the_measured_results():
    """Every number a recipe README states as its result is the one in benchmarks/results/recipes.json."""
    path = REPO / "benchmarks" / "results" / "recipes.json"
    if not path.exists():
        pytest.skip("benchmarks/results/recipes.json not written yet (python benchmarks/recipes.py)")
    res = json.loads(path.read_text())
    table = (REPO / "recipes" / "README.md").read_text()
    for entry, (folder, keys) in QUOTED.items():
        if entry not in res or res[entry].get("quick"):
            continue
        text = (REPO / "recipes" / folder / "README.md").read_text()
        for k in keys:
            quoted = f"{res[entry][k]:.3f}"
            assert quoted in text, f"recipes/{folder}/README.md does not state {entry}.{k} = {quoted}"
            assert quoted in table, f"recipes/README.md does not state {entry}.{k} = {quoted}"

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
    "pneumonia_cxr/compact.yaml": ((64, 64, 1), "binary"),
    "pneumonia_cxr/efficientnet_lite.yaml": ((64, 64, 1), "binary"),
    "diabetic_retinopathy/config.yaml": ((72, 72, 3), "multiclass"),
    "diabetic_retinopathy/multiscale.yaml": ((74, 74, 3), "multiclass"),
    "lung_nodule_ct/config.yaml": ((32, 32, 32, 1), "binary"),
    "lung_nodule_ct/adrenal_3d.yaml": ((28, 28, 28, 1), "binary"),
    "em_membrane/config.yaml": ((256, 256, 1), "segmentation"),
    "brain_tumor_mri/config.yaml": ((144, 144, 2), "segmentation"),
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


def _convert(inputs, out, **options):
    from medtf.records.convert import ConvertConfig, convert

    res = convert(ConvertConfig(inputs=tuple(str(i) for i in inputs), output=str(out), progress=False, **options))
    assert res.exit_code == 0
    return json.loads((out / "manifest.json").read_text())


def test_isbi2012_converts_with_masks_as_the_recipe_says(tmp_path):
    """The em_membrane recipe's tfrecord-convert command: every record equals OpenCV's reading of its PNG
    (image exactly) and its label PNG (membrane = value 0 → class 1, exactly), in the CSV's splits."""
    import cv2

    from medtf.records.reader import load

    src = _shared("isbi2012_em_membrane") / "train"
    m = _convert([src / "image"], tmp_path / "rec", masks=str(src / "label"), mask_map=((0, 1), (255, 0)),
                 labels=str(REPO / "recipes" / "em_membrane" / "splits.csv"), split="input", keep_paths=True)
    assert {k: v["examples"] for k, v in m["splits"].items()} == {"train": 21, "val": 3, "test": 6}
    seen = set()
    for split, ids in (("train", range(0, 21)), ("val", range(21, 24)), ("test", range(24, 30))):
        for e in load(tmp_path / "rec", split):
            name = e["source"].numpy().decode()
            i = int(pathlib.PurePosixPath(name).stem)
            assert i in ids, (split, name)
            seen.add(i)
            img = cv2.imread(str(src / "image" / f"{i}.png"), cv2.IMREAD_GRAYSCALE)
            lab = cv2.imread(str(src / "label" / f"{i}.png"), cv2.IMREAD_GRAYSCALE)
            np.testing.assert_array_equal(e["image"].numpy()[..., 0], img)
            np.testing.assert_array_equal(e["mask"].numpy().reshape(lab.shape), (lab == 0).astype(np.uint8))
    assert seen == set(range(30))


def test_brats_nnunet_folder_converts_to_the_source_volumes(tmp_path):
    """brain_tumor_mri: data_tools/brats2015_to_nnunet.py + tfrecord-convert --mode slice. The test cases keep
    every slice; re-stacked, they equal nibabel's reading of the source NIfTI files (images within float32
    rounding — they are float32 already — and masks exactly after nnU-Net's BraTS renumbering)."""
    import nibabel as nib

    from brats2015_to_nnunet import RENUMBER, build
    from medtf.records.reader import load

    src = _shared("brats2015_deepmedic")
    folder = tmp_path / "Dataset501_BraTS2015"
    assert build(src, folder) == {"imagesTr": 4, "imagesTs": 2}
    m = _convert([folder], tmp_path / "rec", mode="slice", split="train=1.0", empty_slices=0.5)
    assert m["label_regions"] == {"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
    assert m["label_names"] == ["background", "label 1", "label 2", "enhancing tumor"]
    assert set(m["splits"]) == {"train", "test"} and m["splits"]["test"]["examples"] == 2 * 155
    assert m["splits"]["train"]["patients"] == 4 and m["splits"]["train"]["examples"] < 4 * 155  # empty slices sampled
    vols = {}
    for e in load(tmp_path / "rec", "test"):
        unit, _, z = e["source"].numpy().decode().rpartition("#")
        vols.setdefault(unit, {})[int(z)] = (e["image"].numpy(), e["mask"].numpy())
    assert len(vols) == 2 and all(sorted(v) == list(range(155)) for v in vols.values())
    case = sorted((src / "test").glob("brats_*"))[0]
    flair = np.asarray(nib.load(str(case / "Flair_subtrMeanDivStd.nii.gz")).dataobj).transpose(2, 1, 0)
    t1c = np.asarray(nib.load(str(case / "T1c_subtrMeanDivStd.nii.gz")).dataobj).transpose(2, 1, 0)
    label = np.rint(np.asarray(nib.load(str(case / "OTMultiClass.nii.gz")).dataobj)).astype(int).transpose(2, 1, 0)
    expected = np.vectorize(RENUMBER.get)(label)
    matches = 0
    for slices in vols.values():  # which pseudonymous unit is this case: the one whose volume matches
        image = np.stack([slices[z][0] for z in range(155)])
        if image.shape[1:3] == flair.shape[1:] and np.allclose(image[..., 0], flair, atol=1e-6):
            np.testing.assert_allclose(image[..., 1], t1c, atol=1e-6)
            np.testing.assert_array_equal(np.stack([slices[z][1].reshape(flair.shape[1:]) for z in range(155)]), expected)
            matches += 1
    assert matches == 1


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
    import nibabel as nib

    from simulate_low_dose import simulate

    counts = simulate(_shared("tcia_lidc_idri_0001_ct_subset"), tmp_path / "d", sigma_hu=60.0)
    assert counts == {"train": 28, "val": 4, "test": 9}
    rows = (tmp_path / "d" / "splits.csv").read_text().split()
    assert rows[0] == "path,split" and rows[1] == "slice_000.nii.gz,train" and rows[-1] == "slice_040.nii.gz,test"
    assert sum(r.endswith(",val") for r in rows) == 4
    diffs, water = [], []
    for k in range(32, 41):  # the held-out test slices
        low = np.asarray(nib.load(tmp_path / "d" / "low" / f"slice_{k:03d}.nii.gz").dataobj, np.float64)
        full = np.asarray(nib.load(tmp_path / "d" / "full" / f"slice_{k:03d}.nii.gz").dataobj, np.float64)
        assert low.shape == full.shape == (512, 512, 1)
        diffs.append(low - full)
        water.append((full > -100) & (full < 100))
    diff, water = np.stack(diffs), np.stack(water)
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
    "pneumonia_cxr_efficientnet": ("pneumonia_cxr", ("test_auc", "test_accuracy")),
    "pneumonia_cxr_efficientnet_lite": ("pneumonia_cxr", ("test_auc", "test_accuracy")),
    "diabetic_retinopathy": ("diabetic_retinopathy", ("test_auc", "test_accuracy", "test_kappa")),
    "diabetic_retinopathy_multiscale": ("diabetic_retinopathy", ("test_auc", "test_accuracy", "test_kappa")),
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
            if f"{k}_std" in res[entry]:  # a row over seeds is quoted as mean ± sd
                sd = f"{quoted} ± {res[entry][k + '_std']:.3f}"
                assert sd in text, f"recipes/{folder}/README.md does not state {entry}.{k} as {sd}"
                assert sd in table, f"recipes/README.md does not state {entry}.{k} as {sd}"


def test_seeded_rows_hold_mean_sd_and_per_seed_values():
    """benchmarks/recipes.py --seeds: a row's keys hold the mean over seeds, <key>_std the sample sd (NumPy
    ddof=1) and <key>_per_seed the values; non-numeric keys come from the first seed."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_recipes", REPO / "benchmarks" / "recipes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    runs = {0: {"test_auc": 0.90, "n_test": 624, "run": "a", "test_auc_ci": [0.8, 0.95]},
            1: {"test_auc": 0.94, "n_test": 624, "run": "b"},
            2: {"test_auc": 0.95, "n_test": 624, "run": "c"}}
    row = mod.aggregate_seeds(runs)
    aucs = np.array([0.90, 0.94, 0.95])
    assert row["test_auc"] == pytest.approx(aucs.mean(), abs=1e-12)
    assert row["test_auc_std"] == pytest.approx(aucs.std(ddof=1), abs=1e-12)
    assert row["test_auc_per_seed"] == [0.90, 0.94, 0.95] and row["seeds"] == [0, 1, 2]
    assert row["run"] == "a" and row["per_seed"]["2"]["run"] == "c"
    assert "test_auc_ci" not in row and row["per_seed"]["0"]["test_auc_ci"] == [0.8, 0.95]
    ctx = mod.Ctx(pathlib.Path("/w"), quick=False, seed=2)
    assert ctx.run_name("adrenal_3d") == "adrenal_3d_s2"
    o = ctx.overrides("pneumonia_cxr", ["run_name=pneumonia_cxr_efficientnet"])
    assert "seed=2" in o and o[-1] == "run_name=pneumonia_cxr_efficientnet_s2"


def test_reuse_evaluates_a_finished_run_and_trains_an_unfinished_one(tmp_path, monkeypatch):
    """benchmarks/recipes.py --reuse: a finished run (model.keras + model.json, no resume backup) is reused with
    its own span as training minutes; an unfinished one is trained again."""
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location("bench_recipes_reuse", REPO / "benchmarks" / "recipes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    trained = []
    monkeypatch.setattr(mod, "_train", lambda recipe, ctx, records, extra=(), config_name="config.yaml":
                        trained.append((recipe, tuple(extra), config_name)) or tmp_path / "fresh")
    ctx = mod.Ctx(tmp_path, quick=False, reuse=True, seed=1)
    run = tmp_path / "runs" / "pneumonia_cxr_efficientnet_s1"
    run.mkdir(parents=True)
    for name in ("model.keras", "model.json", "config.yaml", "history.csv"):
        (run / name).write_text("x")
    os.utime(run / "config.yaml", (1000, 1000))
    os.utime(run / "history.csv", (1000 + 540, 1000 + 540))
    got, minutes = mod._trained_or_train("pneumonia_cxr", ctx, tmp_path, name="pneumonia_cxr_efficientnet",
                                         config_name="config.yaml")
    assert got == run and minutes == pytest.approx(9.0) and not trained
    (run / "checkpoints" / "backup").mkdir(parents=True)  # interrupted: trained again
    got, _ = mod._trained_or_train("pneumonia_cxr", ctx, tmp_path, name="pneumonia_cxr_efficientnet",
                                   config_name="config.yaml")
    assert got == tmp_path / "fresh"
    assert trained == [("pneumonia_cxr", ("run_name=pneumonia_cxr_efficientnet",), "config.yaml")]

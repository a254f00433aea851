"""build_dataset end to end on small record sets written with the schema encoder."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.utils.class_weight import compute_class_weight

from medtf.data import DataConfig, PatchConfig, build_dataset
from medtf.preprocess import Preprocessing
from medtf.data.config import AugmentConfig, OpConfig
from medtf.data.pipeline import steps_per_epoch
from medtf.preprocess import apply as apply_numpy

from ._records import random_images, record_order, write_records

SCALE = Preprocessing(intensity="scale", scale=255.0)


@pytest.fixture(scope="module")
def rec2d(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec2d")
    items = random_images(30, (20, 24, 1), num_classes=3, with_mask=True, seed=1)
    val = random_images(7, (20, 24, 1), num_classes=3, with_mask=True, seed=2)
    return write_records(root / "r", {"train": items, "val": val}, shards=3, label_names=["a", "b", "c"]), items, val


@pytest.fixture(scope="module")
def rec_imbalanced(tmp_path_factory):
    items = random_images(48, (8, 8, 1), num_classes=2, seed=3)
    items = [(im, 1 if i % 6 == 0 else 0, m) for i, (im, _, m) in enumerate(items)]  # 8 positives, 40 negatives
    return write_records(tmp_path_factory.mktemp("imb") / "r", {"train": items}, shards=2,
                         label_names=["neg", "pos"]), items


def _take(ds, n=None):
    return list((ds if n is None else ds.take(n)).as_numpy_iterator())


def test_config_round_trips_and_validates():
    cfg = DataConfig(
        batch_size=8, preprocessing=Preprocessing(intensity="window", windows=((400, 40),), size=(32, 32)),
        augment=AugmentConfig(ops=(OpConfig("flip", 0.5, axes=(-1,)), OpConfig("affine", 0.3, (10, 0.1, 0.1))),
                              mixup_p=0.5),
        label_mode="onehot", num_classes=3, class_balance="oversample", class_targets=(0.5, 0.25, 0.25),
        patch=PatchConfig((16, 16), 0.4, 2), cache="memory",
    )
    assert DataConfig.from_dict(cfg.to_dict()) == cfg
    assert DataConfig.from_json(cfg.to_json()) == cfg
    assert DataConfig.from_yaml(cfg.to_yaml()) == cfg
    assert DataConfig.from_yaml("data:\n  batch_size: 4\n  augment: light\n") == DataConfig(batch_size=4, augment="light")
    with pytest.raises(ValueError, match="unknown config key .data.batchsize. .did you mean .batch_size"):
        DataConfig.from_dict({"batchsize": 3})
    with pytest.raises(ValueError, match="mixup/cutmix mix labels"):
        DataConfig(augment=AugmentConfig(mixup_p=0.5), label_mode="sparse")
    with pytest.raises(ValueError, match="label_mode must be one of"):
        DataConfig(label_mode="softmax")
    with pytest.raises(ValueError, match="needs one class per example"):
        DataConfig(label_mode="mask", class_balance="weights")


def test_evaluation_batches_equal_numpy_reference_in_order(tmp_path):
    items = random_images(9, (20, 24, 1), seed=4)
    d = write_records(tmp_path / "r", {"val": items}, shards=1, label_names=["a", "b"])
    spec = Preprocessing(intensity="scale", scale=255.0, size=(16, 16), channels=3)
    cfg = DataConfig(batch_size=4, preprocessing=spec, label_mode="sparse")
    ds = build_dataset(d, "val", cfg, training=False)
    assert int(ds.cardinality()) == 3  # known, so Keras' validation pass has a total and no "ran out" warning
    batches = _take(ds)
    assert [b[0].shape[0] for b in batches] == [4, 4, 1]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    ref = np.stack([apply_numpy(im, spec) for im, _, _ in items])
    np.testing.assert_allclose(x, ref, atol=1e-5)
    np.testing.assert_array_equal(y, [lab for _, lab, _ in items])
    assert steps_per_epoch(d, "val", cfg) == 3


def test_same_seed_same_batch_other_seed_other_batch(rec2d):
    d, _, _ = rec2d
    cfg = DataConfig(batch_size=6, preprocessing=SCALE, augment="standard", label_mode="onehot", shuffle_buffer=64)
    a = _take(build_dataset(d, "train", cfg, training=True, seed=11), 2)
    b = _take(build_dataset(d, "train", cfg, training=True, seed=11), 2)
    c = _take(build_dataset(d, "train", cfg, training=True, seed=12), 2)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0], c[0][0])
    # a second epoch of the same dataset draws new augmentations and a new order
    ds = build_dataset(d, "train", cfg.replace(repeat=False), training=True, seed=11)
    e1, e2 = _take(ds, 1)[0][0], _take(ds, 1)[0][0]
    assert not np.array_equal(e1, e2)


@pytest.mark.parametrize("mode,num_classes,y_shape,y_dtype", [
    ("sparse", None, (5,), np.int32), ("onehot", None, (5, 3), np.float32), ("ordinal", None, (5, 2), np.float32),
    ("mask", 2, (5, 20, 24, 2), np.float32), ("image", None, (5, 20, 24, 1), np.float32),
])
def test_label_modes(rec2d, mode, num_classes, y_shape, y_dtype):
    d, _, val = rec2d
    val = record_order(val, 3)
    cfg = DataConfig(batch_size=5, preprocessing=SCALE, label_mode=mode, num_classes=num_classes)
    x, y = _take(build_dataset(d, "val", cfg, training=False), 1)[0]
    assert x.shape == (5, 20, 24, 1) and y.shape == y_shape and y.dtype == y_dtype
    if mode == "mask":
        np.testing.assert_array_equal(y.argmax(-1), np.stack([m for _, _, m in val[:5]]))
    if mode == "image":
        np.testing.assert_array_equal(x, y)
    if mode == "ordinal":
        labels = np.array([lab for _, lab, _ in val[:5]])
        np.testing.assert_array_equal(y, (labels[:, None] > np.arange(2)).astype(np.float32))


def test_binary_multilabel_and_sparse_masks(tmp_path):
    rng = np.random.default_rng(5)
    items = [(rng.integers(0, 255, (6, 6, 1), dtype=np.uint8), rng.integers(0, 2, 4), None) for _ in range(6)]
    d = write_records(tmp_path / "ml", {"train": items}, label_names=["w", "x", "y", "z"])
    _, y = _take(build_dataset(d, "train", DataConfig(batch_size=6, label_mode="multilabel"), training=False), 1)[0]
    np.testing.assert_array_equal(y, np.stack([lab for _, lab, _ in items]).astype(np.float32))
    vols = [(rng.integers(0, 255, (4, 6, 6, 1), dtype=np.uint8), i % 2, rng.integers(0, 3, (4, 6, 6), dtype=np.uint8))
            for i in range(4)]
    d3 = write_records(tmp_path / "v", {"train": vols})
    x, y = _take(build_dataset(d3, "train", DataConfig(batch_size=4, label_mode="mask", num_classes=3,
                                                      mask_onehot=False), training=False), 1)[0]
    assert x.shape == (4, 4, 6, 6, 1) and y.dtype == np.int32
    np.testing.assert_array_equal(y[..., 0], np.stack([m for _, _, m in vols]))
    _, yb = _take(build_dataset(d3, "train", DataConfig(batch_size=4, label_mode="binary"), training=False), 1)[0]
    np.testing.assert_array_equal(yb[:, 0], [0, 1, 0, 1])


def test_class_weights_as_sample_weights(rec_imbalanced):
    d, items = rec_imbalanced
    cfg = DataConfig(batch_size=48, label_mode="binary", class_balance="weights")
    x, y, w = _take(build_dataset(d, "train", cfg, training=True, seed=0), 1)[0]
    labels = np.array([lab for _, lab, _ in items])
    ref = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    np.testing.assert_allclose(w, ref[y[:, 0].astype(int)], rtol=1e-6)
    assert w.shape == (48,)


def test_oversampling_balances_an_epoch(rec_imbalanced):
    d, _ = rec_imbalanced
    cfg = DataConfig(batch_size=16, label_mode="sparse", class_balance="oversample", shuffle_buffer=64)
    ys = np.concatenate([y for _, y in _take(build_dataset(d, "train", cfg, training=True, seed=1))])
    assert ys.size == 48  # one epoch keeps the split's size
    ys2 = np.concatenate([y for _, y in _take(build_dataset(d, "train", cfg.replace(repeat=True), training=True,
                                                            seed=2), 40)])
    assert abs(ys2.mean() - 0.5) < 0.05  # 8 positives of 48 → about half of 640 draws


def test_patches_from_volumes_in_the_pipeline(tmp_path):
    rng = np.random.default_rng(6)
    vols = []
    for i in range(4):
        m = np.zeros((16, 20, 20), np.uint8)
        m[4:6, 5:7, 8:10] = 1
        vols.append((rng.integers(0, 255, (16, 20, 20, 1), dtype=np.uint8), i % 2, m))
    d = write_records(tmp_path / "v", {"train": vols})
    cfg = DataConfig(batch_size=8, preprocessing=SCALE, label_mode="mask", num_classes=2, augment="light",
                     patch=PatchConfig((8, 8, 8), pos_ratio=1.0, samples_per_volume=2))
    x, y = _take(build_dataset(d, "train", cfg, training=True, seed=0), 1)[0]
    assert x.shape == (8, 8, 8, 8, 1) and y.shape == (8, 8, 8, 8, 2)
    assert (y[..., 1].reshape(8, -1).max(1) == 1).all()  # every patch holds foreground
    # evaluation patches are seeded: identical across passes
    ds = build_dataset(d, "train", cfg, training=False, seed=0)
    np.testing.assert_array_equal(_take(ds, 1)[0][0], _take(ds, 1)[0][0])


def test_mixup_in_pipeline_and_keras_fit(rec2d):
    d, _, _ = rec2d
    aug = AugmentConfig(ops=(OpConfig("flip", 0.5),), mixup_p=1.0, mixup_alpha=0.4, cutmix_p=0.5)
    cfg = DataConfig(batch_size=6, preprocessing=SCALE, augment=aug, label_mode="onehot", class_balance="weights")
    ds = build_dataset(d, "train", cfg, training=True, seed=3)
    x, y, w = _take(ds, 1)[0]
    np.testing.assert_allclose(y.sum(-1), 1.0, atol=1e-6)
    assert ((y > 0) & (y < 1)).any()
    inp = keras.Input((20, 24, 1))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    model = keras.Model(inp, out)
    model.compile("sgd", "categorical_crossentropy")
    hist = model.fit(ds, epochs=1, verbose=0, validation_data=build_dataset(d, "val", cfg, training=False))
    assert np.isfinite(hist.history["loss"][0]) and "val_loss" in hist.history


def test_cache_memory_and_file(rec2d, tmp_path):
    d, _, _ = rec2d
    for cache in ("memory", str(tmp_path / "cache" / "c")):
        cfg = DataConfig(batch_size=7, preprocessing=SCALE, cache=cache)
        ds = build_dataset(d, "val", cfg, training=False)
        first, second = _take(ds), _take(ds)
        for (a, _), (b, _) in zip(first, second):
            np.testing.assert_array_equal(a, b)
    assert list((tmp_path / "cache").glob("c-val*"))


def test_restoration_targets_skip_intensity_ops(rec2d):
    d, _, _ = rec2d
    aug = AugmentConfig(ops=(OpConfig("flip", 1.0), OpConfig("noise", 1.0, 0.5)))
    cfg = DataConfig(batch_size=4, preprocessing=SCALE, augment=aug, label_mode="image")
    x, y = _take(build_dataset(d, "train", cfg, training=True, seed=0), 1)[0]
    assert not np.allclose(x, y)
    assert np.abs(x - y).mean() < 0.5 * np.abs(y).mean()  # noisy copy of the same flipped image
    # evaluation: the same degradation (no flips), with fixed seeds: identical pairs on every pass
    ev = build_dataset(d, "val", cfg, training=False, seed=0)
    (x1, y1), (x2, y2) = _take(ev, 1)[0], _take(ev, 1)[0]
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.allclose(x1, y1)
    clean = _take(build_dataset(d, "val", cfg.replace(augment="none"), training=False), 1)[0][1]
    np.testing.assert_array_equal(y1, clean)  # targets are the un-flipped clean images


def test_clear_errors(rec2d, tmp_path):
    d, _, _ = rec2d
    with pytest.raises(ValueError, match=r"split 'test' not in manifest; available splits: \['train', 'val'\]"):
        build_dataset(d, "test", DataConfig(), training=False)
    with pytest.raises(FileNotFoundError, match="manifest.json"):
        build_dataset(tmp_path, "train", DataConfig(), training=False)
    nomask = write_records(tmp_path / "n", {"train": random_images(2, (4, 4, 1))}, label_names=["a", "b"])
    with pytest.raises(ValueError, match="needs records with masks"):
        build_dataset(nomask, "train", DataConfig(label_mode="mask"), training=False)
    win = write_records(tmp_path / "w", {"train": random_images(2, (4, 4, 1), dtype=np.float32)}, image_dtype="float32",
                        intensity={"kind": "window", "windows": [[400, 40]]})
    with pytest.raises(ValueError, match="already store windowed values"):
        build_dataset(win, "train", DataConfig(preprocessing=Preprocessing(intensity="window", windows=((400, 40),))),
                      training=False)
    with pytest.raises(ValueError, match="needs num_classes"):
        build_dataset(nomask, "train", DataConfig(label_mode="ordinal").replace(), training=False) if False else \
            build_dataset(write_records(tmp_path / "nn", {"train": random_images(2, (4, 4, 1))}), "train",
                          DataConfig(label_mode="onehot"), training=False)


@pytest.mark.parametrize("spec", [
    Preprocessing(intensity="zscore", size=(16, 16), channels=3),
    Preprocessing(intensity="window", windows=((200, 100), (80, 120)), size=(12, 20), resize="crop_or_pad"),
])
def test_batched_fast_path_with_mixed_sizes_equals_reference(tmp_path, spec):
    """Batches of equal-size images are preprocessed together, mixed-size batches one by one: both
    equal the NumPy reference."""
    rng = np.random.default_rng(7)
    items = [(rng.integers(0, 256, (20, 24, 1), dtype=np.uint8), i % 2, None) for i in range(6)]
    items += [(rng.integers(0, 256, (18 + i, 30, 1), dtype=np.uint8), i % 2, None) for i in range(3)]
    d = write_records(tmp_path / "r", {"val": items}, label_names=["a", "b"])
    cfg = DataConfig(batch_size=3, preprocessing=spec, label_mode="onehot")
    batches = _take(build_dataset(d, "val", cfg, training=False))
    x = np.concatenate([b[0] for b in batches])
    ref = np.stack([apply_numpy(im, spec) for im, _, _ in items])
    np.testing.assert_allclose(x, ref, atol=1e-5)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]).argmax(-1), [lab for _, lab, _ in items])
    # training through the same fast path: seeded, augmented, right shapes
    tcfg = cfg.replace(augment="standard")
    a = _take(build_dataset(d, "val", tcfg, training=True, seed=5), 2)
    b = _take(build_dataset(d, "val", tcfg, training=True, seed=5), 2)
    np.testing.assert_array_equal(a[1][0], b[1][0])
    assert a[0][0].shape == (3,) + ref.shape[1:]


def test_unlabelled_records_through_patch_and_batched_paths(tmp_path):
    """Regression: TF's unbatch() segfaults on the (B, 0) label of unlabelled records."""
    rng = np.random.default_rng(8)
    items = [(rng.integers(0, 255, (40, 40, 1), dtype=np.uint8), None, (rng.random((40, 40)) > 0.5).astype(np.uint8))
             for _ in range(4)]
    d = write_records(tmp_path / "u", {"train": items})
    seg = DataConfig(batch_size=4, preprocessing=SCALE, label_mode="mask", num_classes=2, augment="light",
                     patch=PatchConfig((16, 16), 0.5, 2), cache="memory")
    x, y = _take(build_dataset(d, "train", seg, training=True, seed=0), 1)[0]
    assert x.shape == (4, 16, 16, 1) and y.shape == (4, 16, 16, 2)
    restore = DataConfig(batch_size=2, preprocessing=Preprocessing(intensity="scale", scale=255.0, size=(32, 32)),
                         label_mode="image", augment=AugmentConfig(ops=(OpConfig("noise", 1.0, 0.3),)))
    x, y = _take(build_dataset(d, "train", restore, training=True, seed=0), 1)[0]
    assert x.shape == y.shape == (2, 32, 32, 1) and not np.allclose(x, y)

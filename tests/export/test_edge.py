"""Edge runtime: no TensorFlow import, NumPy preprocessing equals the graph ops, input readers."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from medtf.preprocess import Preprocessing
from medtf.export import edge

from ._helpers import write_ct_dicom


def test_edge_imports_no_tensorflow_or_keras():
    code = (
        "import sys, medtf.export.edge, medtf.export.metadata, medtf.cli.edge, medtf.cli.export\n"
        "from medtf.cli.main import build_parser; build_parser()\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf_keras'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("shape,size", [((28, 28, 1), (64, 64)), ((40, 48, 3), (32, 20)), ((17, 9, 2), (17, 30))])
def test_resize_matches_tf_image_resize(shape, size):
    import tensorflow as tf

    x = np.random.default_rng(1).normal(size=shape).astype(np.float32) * 100
    ref = tf.image.resize(x, size, method="bilinear").numpy()
    np.testing.assert_allclose(edge.resize_bilinear(x, size), ref, atol=1e-4, rtol=1e-5)


def test_resize_3d_matches_scipy_trilinear():
    from scipy import ndimage

    x = np.random.default_rng(2).normal(size=(6, 10, 8, 1)).astype(np.float32)
    size = (9, 5, 12)
    coords = np.meshgrid(*[np.clip((np.arange(o) + 0.5) * (n / o) - 0.5, 0, n - 1)
                           for n, o in zip(x.shape[:3], size)], indexing="ij")
    ref = ndimage.map_coordinates(x[..., 0].astype(np.float64), coords, order=1, mode="nearest")
    np.testing.assert_allclose(edge.resize_bilinear(x, size)[..., 0], ref, atol=1e-5)


@pytest.mark.parametrize("size", [(20, 30), (50, 10), (33, 33)])
def test_crop_or_pad_matches_tf(size):
    import tensorflow as tf

    x = np.random.default_rng(3).normal(size=(31, 25, 2)).astype(np.float32)
    ref = tf.image.resize_with_crop_or_pad(x, *size).numpy()
    np.testing.assert_array_equal(edge.crop_or_pad(x, size), ref)


SPECS = [
    Preprocessing(intensity="window", windows=((1500, -600), (400, 40)), size=(24, 24)),
    Preprocessing(intensity="zscore", size=(16, 20), channels=3),
    Preprocessing(intensity="zscore", mean=10.0, std=50.0, size=(12, 12), resize="crop_or_pad"),
    Preprocessing(intensity="range", value_range=(-1000, 400), size=(30, 30)),
    Preprocessing(intensity="scale", scale=255.0, channels=3),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.intensity)
def test_numpy_preprocessing_matches_graph(spec):
    import tensorflow as tf

    from medtf.preprocess import tf_ops

    raw = np.random.default_rng(4).uniform(-1200, 1500, size=(2, 28, 28, 1)).astype(np.float32)
    graph = tf_ops.apply_chain(tf.constant(raw), spec, batched=True).numpy()
    for i in range(2):
        np.testing.assert_allclose(edge.preprocess(raw[i], spec), graph[i], atol=2e-5, rtol=1e-5)


def test_read_dicom_applies_modality_lut(tmp_path):
    import pydicom
    from pydicom.pixels import apply_modality_lut

    path = tmp_path / "ct.dcm"
    expected = write_ct_dicom(path, slope=2.0, intercept=-1024)
    got = edge.read_image(path)
    ds = pydicom.dcmread(path)
    np.testing.assert_array_equal(got[..., 0], apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
    np.testing.assert_array_equal(got, expected)


def test_read_dicom_monochrome1_inverted(tmp_path):
    path = tmp_path / "cr.dcm"
    expected = write_ct_dicom(path, photometric="MONOCHROME1", intercept=0)
    got = edge.read_image(path)
    np.testing.assert_array_equal(got, expected)
    # the edge runtime sees exactly what the converter stored for training
    from medtf.io import Pseudonymizer, SourceUnit, read_unit

    (image,) = read_unit(SourceUnit("dicom", (str(path),), "cr.dcm"), pseudonymizer=Pseudonymizer(b"k" * 32))
    np.testing.assert_array_equal(got, image.array.astype(np.float32))


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.dcm"):
        edge.read_image(tmp_path / "missing.dcm")
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="notes.txt"):
        edge.read_image(bad)


def test_quantize_roundtrip():
    x = np.linspace(-1, 1, 101, dtype=np.float32)
    q = edge.quantize(x, 1 / 127.5, 0, np.int8)
    assert q.dtype == np.int8
    np.testing.assert_array_equal(edge.quantize(np.array([-5.0, 5.0]), 1 / 127.5, 0, np.int8), [-128, 127])
    np.testing.assert_array_equal(edge.quantize(np.array([-5.0, 5.0]), 1 / 255, 0, np.uint8), [0, 255])
    np.testing.assert_allclose(edge.dequantize(q, 1 / 127.5, 0), x, atol=0.51 / 127.5)

"""The TF-free encoder (the only record encoder) and TFRecord framing against TensorFlow's own, byte for byte."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from medtf.records import encode as enc

tf = pytest.importorskip("tensorflow")
from medtf.records import schema  # noqa: E402


def test_constants_come_from_the_schema():
    assert (enc.SCHEMA_VERSION, enc.SCHEMA_NAME, enc.IMAGE_DTYPES) == (
        schema.SCHEMA_VERSION, schema.SCHEMA_NAME, schema.IMAGE_DTYPES)
    assert not hasattr(schema, "encode_example")  # one encoder: medtf.records.encode


def test_writing_records_never_imports_tensorflow():
    code = ("import sys, numpy as np\n"
            "from medtf.records import encode, reader, schema, writer\n"
            "encode.frame_record(encode.encode_example(np.zeros((2, 2, 1), np.uint8), spacing=(1, 1), patient='p',"
            " source='s', image_dtype='uint8'))\n"
            "assert 'tensorflow' not in sys.modules, 'records imported TensorFlow'\n")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("n", [0, 1, 9, 1023, 1024, 1025, 4096 + 3, 200_000])
def test_crc32c_against_bytewise_reference(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    # bit-by-bit CRC-32C (independent of the table code)
    crc = 0xFFFFFFFF
    for b in data[:2000] if n > 2000 else data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    if n <= 2000:
        assert enc.crc32c(data) == crc ^ 0xFFFFFFFF
    else:  # long inputs: vectorised path vs the table path on the same bytes
        s = 0
        for b in data:
            s = enc._T8_LIST[(s ^ b) & 0xFF] ^ (s >> 8)
        assert enc._crc_raw(data) == s
    assert enc.crc32c(b"123456789") == 0xE3069283  # the standard check value
    # the NumPy fallback and the (possibly hardware) default agree on every length
    assert enc.crc32c_numpy(data) == enc.crc32c(data)
    assert enc.crc32c_numpy(memoryview(data)) == enc.crc32c(memoryview(data))


def _examples():
    rng = np.random.default_rng(0)
    yield dict(image=rng.integers(-1024, 3000, (5, 7, 1)).astype(np.int16), spacing=(0.7, 0.8), patient="P-1",
               source="a/b.dcm", image_dtype="int16", origin=(1.0, -2.5, 3.25), direction=tuple(np.eye(3).ravel()),
               label=(1,), modality="CT")
    yield dict(image=rng.random((2, 3, 4, 2)).astype(np.float32), spacing=(2.5, 0.5, 0.5), patient="P-2",
               source="series:ab#0", image_dtype="float32", label=(0, 1, 1),
               mask=rng.integers(0, 3, (2, 3, 4)).astype(np.uint8))
    yield dict(image=rng.integers(0, 255, (28, 28, 3)).astype(np.uint8), spacing=(1.0, 1.0), patient="P-é",
               source="x.npz#12", image_dtype="uint8", label=None, modality="")
    yield dict(image=rng.integers(0, 65535, (4, 4, 1)).astype(np.uint16), spacing=(1, 1), patient="P", source="s",
               image_dtype="int32", label=(-3, 2**40))
    # a paired restoration target (tfrecord-convert --targets) on a 2x grid, stored in the image's dtype
    yield dict(image=rng.random((3, 5, 1)).astype(np.float32), spacing=(1.4, 1.4), patient="P-3", source="lr/a.png",
               image_dtype="float32", target=rng.random((6, 10, 1)).astype(np.float32))


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _reference_example(image, *, spacing, patient, source, image_dtype, origin=None, direction=None, label=None,
                       mask=None, modality="", target=None):
    """The same example built by hand with TensorFlow's protos (``tf.train.Example`` / ``tf.train.Features``)."""

    def b(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))

    def i(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(x) for x in v]))

    def f(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=[float(x) for x in v]))

    stored = np.ascontiguousarray(image, dtype=np.dtype(image_dtype).newbyteorder("<"))
    geometry = {"spacing": [float(s) for s in spacing],
                "origin": None if origin is None else [float(s) for s in origin],
                "direction": None if direction is None else [float(s) for s in direction]}
    feats = {
        "image": b(stored.tobytes()), "image_shape": i(image.shape), "spacing": f(spacing),
        "origin": f(origin if origin is not None else []), "direction": f(direction if direction is not None else []),
        "geometry": b(json.dumps(geometry).encode()), "label": i(label if label is not None else []),
        "patient": b(patient.encode()), "source": b(source.encode()), "modality": b(modality.encode()),
    }
    if mask is not None:
        feats["mask"] = b(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
        feats["mask_shape"] = i(mask.shape)
    if target is not None:
        feats["target"] = b(np.ascontiguousarray(target, dtype=np.dtype(image_dtype).newbyteorder("<")).tobytes())
        feats["target_shape"] = i(target.shape)
    return tf.train.Example(features=tf.train.Features(feature=feats))


@pytest.mark.parametrize("kw", list(_examples()), ids=["ct", "vol-mask", "rgb8", "widen", "target"])
def test_example_equals_tf_train_example_built_by_hand(kw):
    ours = enc.encode_example(**kw)
    ref = _reference_example(**kw)
    parsed = tf.train.Example.FromString(ours)
    assert parsed == ref  # identical features
    assert set(parsed.features.feature) <= set(schema.feature_spec())  # only the schema's keys
    # identical bytes: TensorFlow's serializer orders map entries as it likes (even deterministic=True is not
    # plain key order), so the reference is TF's own bytes of each one-entry Features, concatenated in key
    # order (the encoder's order), inside the Example's field 1.
    entries = b"".join(tf.train.Features(feature={k: ref.features.feature[k]}).SerializeToString()
                       for k in sorted(ref.features.feature))
    assert ours == b"\x0a" + _varint(len(entries)) + entries
    parsed = schema.parse_example(tf.constant(enc.encode_example(**kw)), kw["image_dtype"])
    np.testing.assert_array_equal(parsed["image"].numpy(), kw["image"].astype(np.float32))
    if kw.get("mask") is not None:
        np.testing.assert_array_equal(parsed["mask"].numpy(), kw["mask"])
    if kw.get("target") is not None:
        np.testing.assert_array_equal(parsed["target"].numpy(), kw["target"])
    else:
        assert parsed["target"].shape == (0,)


def test_not_representable_raises():
    with pytest.raises(ValueError, match="not exactly representable as int16"):
        enc.encode_example(np.full((2, 2, 1), 40000, np.int32), spacing=(1, 1), patient="p", source="s",
                           image_dtype="int16")
    with pytest.raises(ValueError, match="image_dtype must be one of"):
        enc.encode_example(np.zeros((2, 2, 1)), spacing=(1, 1), patient="p", source="s", image_dtype="float64")


def test_frames_equal_tfrecordwriter_bytes(tmp_path):
    payloads = [enc.encode_example(**kw) for kw in _examples()] + [b"", b"x" * 70_000]
    path = tmp_path / "ref.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as w:
        for p in payloads:
            w.write(p)
    ours = b"".join(enc.frame_record(p) for p in payloads)
    assert ours == path.read_bytes()
    assert list(enc.iter_frames(ours)) == payloads
    bad = bytearray(ours)
    bad[20] ^= 1
    with pytest.raises(ValueError, match="CRC mismatch"):
        list(enc.iter_frames(bytes(bad)))

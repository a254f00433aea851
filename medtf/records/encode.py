"""Pure encoder: arrays → ``tf.train.Example`` bytes → TFRecord frames, without importing TensorFlow.

The converter's worker processes use this module so that they never pay for (or fork after) a
TensorFlow import. It writes the protobuf wire format of ``tf.train.Example`` directly and frames
records exactly as ``tf.io.TFRecordWriter`` does (length, masked CRC-32C of the length, data,
masked CRC-32C of the data). It is the only record encoder: ``tests/records/test_encode.py`` checks
it against TensorFlow (the serialized bytes equal those of the same ``tf.train.Example`` built with
``tf.train.Features``, and the framed bytes equal ``tf.io.TFRecordWriter``'s, byte for byte).

CRC-32C runs in NumPy: the payload is cut into equal chunks whose CRCs are computed side by side
(four bytes per step through two 64K tables) and then combined with precomputed
"append N zero bytes" operators, so a 512 KB image costs about a millisecond.
"""

from __future__ import annotations

import json
import struct
from functools import lru_cache

import numpy as np

from medtf.records.schema import IMAGE_DTYPES, SCHEMA_NAME, SCHEMA_VERSION  # noqa: F401 - re-exported

# ----------------------------------------------------------------------------------------- CRC-32C

_POLY = 0x82F63B78  # Castagnoli, reflected
_MASK_DELTA = 0xA282EAD8


def _byte_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1).astype(np.uint32)
    return t


_T8 = _byte_table()
_T8_LIST = _T8.tolist()


@lru_cache(maxsize=1)
def _word_tables() -> tuple[np.ndarray, np.ndarray]:
    """Tables for one 4-byte step: new_state = A[x & 0xFFFF] ^ B[x >> 16] with x = state ^ word."""

    def run(values: np.ndarray, nbytes: int, skip: int) -> np.ndarray:
        # CRC register after feeding `nbytes` bytes of `values` (LSB first) followed by `skip` zero bytes.
        s = values.astype(np.uint32)
        for _ in range(nbytes + skip):
            s = _T8[s & 0xFF] ^ (s >> 8)
        return s

    idx = np.arange(65536, dtype=np.uint32)
    # x's low half is consumed in the first two byte steps, then two more (zero-data) steps shift it out.
    a = run(idx, 2, 2)
    b = np.zeros(65536, dtype=np.uint32)
    s = idx << 16
    for _ in range(4):
        s = _T8[s & 0xFF] ^ (s >> 8)
    b[:] = s
    return a, b


def _gf2_times(mat: list[int], vec: int) -> int:
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _gf2_square(mat: list[int]) -> list[int]:
    return [_gf2_times(mat, mat[n]) for n in range(32)]


@lru_cache(maxsize=64)
def _zeros_operator(log2_nbytes: int) -> tuple[int, ...]:
    """32 columns of the linear map 'feed 2**log2_nbytes zero bytes' on the CRC register."""
    if log2_nbytes == 0:
        cols = []
        for n in range(32):
            s = 1 << n
            s = int(_T8[s & 0xFF]) ^ (s >> 8)
            cols.append(s)
        return tuple(cols)
    return tuple(_gf2_square(list(_zeros_operator(log2_nbytes - 1))))


def _shift(state: int, nbytes: int) -> int:
    """CRC register after feeding ``nbytes`` zero bytes."""
    k = 0
    while nbytes:
        if nbytes & 1:
            state = _gf2_times(list(_zeros_operator(k)), state)
        nbytes >>= 1
        k += 1
    return state


@lru_cache(maxsize=64)
def _shift_tables(log2_nbytes: int) -> np.ndarray:
    """(4, 256) tables applying 'feed 2**log2_nbytes zero bytes' to a vector of registers."""
    cols = _zeros_operator(log2_nbytes)
    tables = np.zeros((4, 256), dtype=np.uint32)
    for b in range(4):
        for v in range(256):
            acc = 0
            for bit in range(8):
                if v >> bit & 1:
                    acc ^= cols[8 * b + bit]
            tables[b, v] = acc
    return tables


_CHUNK = 64  # bytes per lane (power of two)


def _crc_raw(data: bytes | memoryview) -> int:
    """CRC register from state 0 over ``data`` (no pre/post inversion)."""
    n = len(data)
    if n < 1024:
        s = 0
        t = _T8_LIST
        for b in bytes(data):
            s = t[(s ^ b) & 0xFF] ^ (s >> 8)
        return s
    lanes = 1 << int(np.ceil(np.log2(-(-n // _CHUNK))))
    total = lanes * _CHUNK
    buf = np.zeros(total, dtype=np.uint8)
    buf[total - n :] = np.frombuffer(data, dtype=np.uint8)  # leading zeros leave a zero register unchanged
    words = np.ascontiguousarray(buf.view("<u4").reshape(lanes, _CHUNK // 4).T)
    a, b = _word_tables()
    s = np.zeros(lanes, dtype=np.uint32)
    x = np.empty(lanes, dtype="<u4")
    halves = x.view("<u2").reshape(lanes, 2)  # low / high 16 bits of x, as views (no copies)
    lo, hi = halves[:, 0], halves[:, 1]
    t1 = np.empty(lanes, dtype=np.uint32)
    t2 = np.empty(lanes, dtype=np.uint32)
    for w in words:
        np.bitwise_xor(s, w, out=x)
        np.take(a, lo, out=t1)
        np.take(b, hi, out=t2)
        np.bitwise_xor(t1, t2, out=s)
    # combine neighbours: crc(L || R) = shift_{|R|}(crc(L)) ^ crc(R)
    k = int(np.log2(_CHUNK))
    while s.size > 1:
        t = _shift_tables(k)
        left = np.ascontiguousarray(s[0::2]).astype("<u4", copy=False)
        bytes4 = left.view(np.uint8).reshape(-1, 4)
        s = t[0][bytes4[:, 0]] ^ t[1][bytes4[:, 1]] ^ t[2][bytes4[:, 2]] ^ t[3][bytes4[:, 3]] ^ s[1::2]
        k += 1
    return int(s[0])


def crc32c_numpy(data: bytes | memoryview) -> int:
    """CRC-32C (Castagnoli) of ``data`` in NumPy: the fallback when ``google-crc32c`` is missing."""
    n = len(data)
    return (_shift(0xFFFFFFFF, n) ^ _crc_raw(data)) ^ 0xFFFFFFFF


try:  # hardware CRC-32C (SSE4.2 / ARMv8): ~10x the NumPy lanes on 512x512 int16 slices
    import google_crc32c as _gcrc

    def crc32c(data: bytes | memoryview) -> int:
        """CRC-32C (Castagnoli) of ``data``, as used by TFRecord."""
        return _gcrc.value(bytes(data) if isinstance(data, memoryview) else data)

except ImportError:  # pragma: no cover - depends on the environment
    crc32c = crc32c_numpy


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC-32C."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """One TFRecord frame: uint64 length, masked CRC of the length, data, masked CRC of the data."""
    header = struct.pack("<Q", len(data))
    return b"".join(
        (header, struct.pack("<I", masked_crc32c(header)), data, struct.pack("<I", masked_crc32c(data)))
    )


def iter_frames(buffer: bytes | memoryview, *, verify: bool = True):
    """Yield the payloads of concatenated TFRecord frames in ``buffer`` (checks CRCs when ``verify``)."""
    mv = memoryview(buffer)
    pos = 0
    while pos < len(mv):
        if len(mv) - pos < 12:
            raise ValueError(f"truncated TFRecord frame at byte {pos}")
        (length,) = struct.unpack_from("<Q", mv, pos)
        end = pos + 12 + length + 4
        if end > len(mv):
            raise ValueError(f"truncated TFRecord frame at byte {pos}: needs {length} bytes")
        data = mv[pos + 12 : pos + 12 + length]
        if verify:
            (hcrc,) = struct.unpack_from("<I", mv, pos + 8)
            (dcrc,) = struct.unpack_from("<I", mv, end - 4)
            if hcrc != masked_crc32c(mv[pos : pos + 8]) or dcrc != masked_crc32c(data):
                raise ValueError(f"corrupt TFRecord frame at byte {pos} (CRC mismatch)")
        yield bytes(data)
        pos = end


# -------------------------------------------------------------------------------- protobuf writer


def _varint(v: int) -> bytes:
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    """Length-delimited field."""
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(values: list[bytes]) -> bytes:
    return _ld(1, b"".join(_ld(1, v) for v in values))


def _float_feature(values) -> bytes:
    arr = np.asarray(values, dtype="<f4").ravel()
    inner = _ld(1, arr.tobytes()) if arr.size else b""
    return _ld(2, inner)


def _int_feature(values) -> bytes:
    vals = [int(v) for v in values]
    inner = _ld(1, b"".join(_varint(v) for v in vals)) if vals else b""
    return _ld(3, inner)


def _example(features: dict[str, bytes]) -> bytes:
    entries = b"".join(_ld(1, _ld(1, k.encode()) + _ld(2, v)) for k, v in sorted(features.items()))
    return _ld(1, entries)


def storable(image: np.ndarray, image_dtype: str) -> np.ndarray:
    """``image`` as little-endian ``image_dtype``; raises ValueError if a value would change."""
    if image_dtype not in IMAGE_DTYPES:
        raise ValueError(f"image_dtype must be one of {IMAGE_DTYPES}. Received: {image_dtype!r}")
    stored = np.ascontiguousarray(image, dtype=np.dtype(image_dtype).newbyteorder("<"))
    if stored.dtype != image.dtype or not stored.flags.c_contiguous:
        if not np.array_equal(stored.astype(image.dtype, copy=False), image, equal_nan=image.dtype.kind == "f"):
            raise ValueError(f"image values are not exactly representable as {image_dtype}")
    return stored


def encode_example(
    image: np.ndarray,
    *,
    spacing,
    patient: str,
    source: str,
    image_dtype: str,
    origin=None,
    direction=None,
    label=None,
    mask: np.ndarray | None = None,
    modality: str = "",
    target: np.ndarray | None = None,
) -> bytes:
    """Serialise one example (the keys of :mod:`medtf.records.schema`) without TensorFlow.

    Args:
        image: channels-last (H, W, C) or (D, H, W, C) array.
        spacing: mm per spatial axis, in the array's axis order.
        patient: pseudonymous patient key.
        source: record key.
        image_dtype: storage dtype (one of ``IMAGE_DTYPES``); must hold every value exactly.
        origin, direction: optional geometry (LPS origin, 3×3 row-major direction).
        label: optional int label(s).
        mask: optional uint8-compatible mask.
        modality: modality tag.
        target: optional paired restoration target, channels last like ``image`` (its own spatial size:
            the input grid or an integer multiple of it), stored in ``image_dtype`` like the image.

    Returns:
        The serialized ``tf.train.Example``.

    Raises:
        ValueError: bad shape, spacing length, dtype, or values not representable.
    """
    image = np.asarray(image)
    if image.ndim not in (3, 4):
        raise ValueError(f"image must be (H, W, C) or (D, H, W, C). Received shape: {image.shape}")
    if len(spacing) != image.ndim - 1:
        raise ValueError(f"spacing needs {image.ndim - 1} values for shape {image.shape}. Received: {spacing}")
    stored = storable(image, image_dtype)
    geometry = json.dumps(
        {
            "spacing": [float(s) for s in spacing],
            "origin": None if origin is None else [float(s) for s in origin],
            "direction": None if direction is None else [float(s) for s in direction],
        }
    ).encode()
    feats = {
        "image": _bytes_feature([stored.tobytes()]),
        "image_shape": _int_feature(image.shape),
        "spacing": _float_feature(list(spacing)),
        "origin": _float_feature(list(origin) if origin is not None else []),
        "direction": _float_feature(list(direction) if direction is not None else []),
        "geometry": _bytes_feature([geometry]),
        "label": _int_feature(label if label is not None else []),
        "patient": _bytes_feature([patient.encode()]),
        "source": _bytes_feature([source.encode()]),
        "modality": _bytes_feature([modality.encode()]),
    }
    if mask is not None:
        m = np.ascontiguousarray(mask)
        if m.dtype != np.uint8:
            if m.min(initial=0) < 0 or m.max(initial=0) > 255:
                raise ValueError("mask values must fit in uint8")
            m = m.astype(np.uint8)
        feats["mask"] = _bytes_feature([m.tobytes()])
        feats["mask_shape"] = _int_feature(m.shape)
    if target is not None:
        t = np.asarray(target)
        if t.ndim != image.ndim:
            raise ValueError(f"target must have the image's rank {image.ndim}. Received shape: {t.shape}")
        feats["target"] = _bytes_feature([storable(t, image_dtype).tobytes()])
        feats["target_shape"] = _int_feature(t.shape)
    return _example(feats)

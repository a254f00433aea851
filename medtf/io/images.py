"""PNG / JPEG (OpenCV), TIFF (tifffile) and GIF (Pillow): 8/16-bit grayscale and RGB, returned as (H, W, C).

Colour is returned as RGB (OpenCV's BGR is converted); an alpha channel is dropped (recorded in meta).
Multi-page TIFF stacks follow ``ReadOptions.frames`` like multi-frame DICOM ((P, H, W, C) for "all").
Compressed TIFF (LZW, deflate, ...) decodes through tifffile's codecs (``imagecodecs``).

GIF holds palette indices; this reader returns what the image shows, never the indices (Pillow
renumbers the palette when it saves, so the indices of a mask saved from an 'L' image are not its
values): a palette whose used entries are all gray (R = G = B) gives one channel of those gray values
(a mask saved with Pillow mode 'L', or mode 'P' with a gray palette, reads back as its pixel values);
a colour palette gives 3 channels, RGB. Transparency is ignored; animated GIFs are rejected.

These formats carry no geometry: spacing is 1.0 with ``meta["spacing_default"]``.
"""

from __future__ import annotations

import struct

import numpy as np

from medtf.io import deid
from medtf.io.types import Image, ReadError, ReadOptions

_PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(head: bytes) -> tuple[int, int] | None:
    if head.startswith(_PNG) and len(head) >= 24 and head[12:16] == b"IHDR":
        w, h = struct.unpack(">II", head[16:24])
        return h, w
    return None


def _jpeg_size(path) -> tuple[int, int, int] | None:
    """(height, width, components) from the first SOF marker, or None."""
    with open(path, "rb") as fh:
        data = fh.read(1 << 20)
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        seg_len = struct.unpack(">H", data[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return h, w, data[i + 9]
        i += 2 + seg_len
    return None


def _from_cv(path, arr: np.ndarray, meta: dict) -> np.ndarray:
    import cv2

    if arr.ndim == 2:
        return arr[..., None]
    if arr.ndim == 3 and arr.shape[2] == 1:
        return arr
    if arr.ndim == 3 and arr.shape[2] == 3:
        return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)
    if arr.ndim == 3 and arr.shape[2] == 4:
        meta["alpha_dropped"] = True
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    raise ReadError(path, f"unsupported image layout {arr.shape}")


def _channels_last(path, arr: np.ndarray, meta: dict, pages: bool) -> np.ndarray:
    """tifffile arrays → (H, W, C) or (P, H, W, C)."""
    spatial = 3 if pages else 2
    if arr.ndim == spatial:
        return arr[..., None]
    if arr.ndim == spatial + 1 and arr.shape[-1] in (1, 3, 4):
        if arr.shape[-1] == 4:
            meta["alpha_dropped"] = True
            return arr[..., :3]
        return arr
    raise ReadError(path, f"unsupported TIFF layout {arr.shape} (expected gray or RGB pages)")


def read_image(path, *, patient: str, options: ReadOptions = ReadOptions(), modality: str | None = None) -> list[Image]:
    """Read a PNG, JPEG or TIFF file.

    Args:
        path: the file.
        patient: patient pseudonym (these formats have no patient ID).
        options: ``max_pixels`` (checked from the header where possible), ``frames`` for multi-page TIFF.
        modality: tag to store; default the format ("PNG", "JPEG", "TIFF").

    Returns:
        [Image] with uint8/uint16 (or the TIFF's dtype) pixels, (H, W, C); one per page with frames="each".

    Raises:
        ReadError: unreadable, truncated, too large or unsupported layout.
    """
    with open(path, "rb") as fh:
        head = fh.read(32)
    meta: dict = {"spacing_default": True}
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _read_tiff(path, patient=patient, options=options, modality=modality or "TIFF", meta=meta)
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return [_read_gif(path, patient=patient, options=options, modality=modality or "GIF", meta=meta)]
    import cv2

    fmt = "PNG" if head.startswith(_PNG) else "JPEG"
    size = _png_size(head) if fmt == "PNG" else _jpeg_size(path)
    if size is not None and size[0] * size[1] > options.max_pixels:
        raise ReadError(path, f"header claims {size[0]}x{size[1]} pixels, more than max_pixels={options.max_pixels}")
    if size is None and fmt == "PNG":
        raise ReadError(path, "PNG without a valid IHDR header")
    buf = np.fromfile(str(path), dtype=np.uint8)
    arr = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ReadError(path, f"{fmt} data could not be decoded (corrupt or truncated)")
    arr = _from_cv(path, arr, meta)
    meta["format"] = fmt.lower()
    return [Image(array=np.ascontiguousarray(arr), spacing=(1.0, 1.0), patient=patient, modality=modality or fmt,
                  meta=deid.check_meta(meta))]


def _read_tiff(path, *, patient, options, modality, meta) -> list[Image]:
    import tifffile

    try:
        with tifffile.TiffFile(str(path)) as tf:
            series = tf.series[0]
            shape = tuple(int(s) for s in series.shape)
            if int(np.prod(shape, dtype=np.int64)) > options.max_pixels:
                raise ReadError(path, f"TIFF claims {int(np.prod(shape, dtype=np.int64))} samples, more than "
                                      f"max_pixels={options.max_pixels}")
            arr = series.asarray()
    except ReadError:
        raise
    except Exception as exc:  # noqa: BLE001
        if "imagecodecs" in str(exc):
            raise ReadError(path, "TIFF compression needs the 'imagecodecs' package (pip install imagecodecs)") from None
        raise ReadError(path, f"TIFF could not be decoded ({type(exc).__name__})") from None
    axes = getattr(series, "axes", "")
    pages = arr.ndim == 4 or (arr.ndim == 3 and not axes.endswith("S"))
    if arr.ndim > 4:
        raise ReadError(path, f"unsupported TIFF layout {arr.shape} ({axes})")
    arr = _channels_last(path, arr, meta, pages)
    meta["format"] = "tiff"
    if not pages:
        return [Image(array=np.ascontiguousarray(arr), spacing=(1.0, 1.0), patient=patient, modality=modality,
                      meta=deid.check_meta(meta))]
    n = arr.shape[0]
    meta["pages"] = n
    sel = options.frames
    if sel == "all":
        return [Image(array=np.ascontiguousarray(arr), spacing=(1.0, 1.0, 1.0), patient=patient,
                      modality=modality, meta=deid.check_meta(meta))]
    idx = {"first": [0], "middle": [n // 2], "each": list(range(n))}.get(sel)
    if idx is None:
        if not -n <= int(sel) < n:
            raise ReadError(path, f"page {sel} requested but the TIFF has {n} pages")
        idx = [int(sel) % n]
    return [Image(array=np.ascontiguousarray(arr[i]), spacing=(1.0, 1.0), patient=patient, modality=modality,
                  meta=deid.check_meta({**meta, "frame_index": i}), index=i) for i in idx]


def _read_gif(path, *, patient, options, modality, meta) -> Image:
    """One single-frame GIF (see the module docstring for palette handling)."""
    from PIL import Image as PILImage

    try:
        with PILImage.open(str(path)) as im:
            w, h = im.size
            if w * h > options.max_pixels:
                raise ReadError(path, f"header claims {h}x{w} pixels, more than max_pixels={options.max_pixels}")
            frames = int(getattr(im, "n_frames", 1))
            if frames > 1:
                raise ReadError(path, f"animated GIF with {frames} frames (only single-frame GIFs are read)")
            im.load()
            mode = im.mode
            if mode in ("P", "PA"):
                idx = np.asarray(im.convert("P") if mode == "PA" else im)
                palette = np.asarray(im.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
                used = np.unique(idx)
                if used.size and int(used[-1]) >= len(palette):
                    raise ReadError(path, f"GIF pixel index {int(used[-1])} beyond its {len(palette)}-entry palette")
                colours = palette[used]
                if np.all(colours[:, 0] == colours[:, 1]) and np.all(colours[:, 1] == colours[:, 2]):
                    arr = palette[:, 0][idx][..., None]
                    meta["color_converted"] = "PALETTE->GRAY"
                else:
                    arr = palette[idx]
                    meta["color_converted"] = "PALETTE->RGB"
            elif mode == "L":
                arr = np.asarray(im)[..., None]
            elif mode == "RGB":
                arr = np.asarray(im)
            else:
                if "A" in mode:
                    meta["alpha_dropped"] = True
                arr = np.asarray(im.convert("RGB"))
    except ReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure is a bad input
        raise ReadError(path, f"GIF data could not be decoded ({type(exc).__name__})") from None
    meta["format"] = "gif"
    return Image(array=np.ascontiguousarray(arr), spacing=(1.0, 1.0), patient=patient, modality=modality,
                 meta=deid.check_meta(meta))

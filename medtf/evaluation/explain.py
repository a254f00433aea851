"""Grad-CAM for 2D and 3D Keras classifiers, and PNG overlays (mid-slices for volumes).

Grad-CAM (Selvaraju et al., 2017): for a target unit ``c`` and the feature maps ``A_k`` of a
convolutional layer, ``alpha_k = mean_spatial(d score_c / d A_k)`` and
``cam = ReLU(sum_k alpha_k A_k)``, upsampled (bilinear / trilinear) to the input size and divided
by its maximum (all-zero maps stay zero).

The score is the *pre-activation* logit of the output unit when the output layer is a ``Dense``
with a sigmoid/softmax activation or an ``Activation`` layer (gradients of saturated probabilities
vanish); otherwise the output itself. For a global-average-pool + Dense head this equals CAM
(Zhou et al., 2016) up to the normalisation — the test suite checks exactly that.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

__all__ = ["find_target_layer", "grad_cam", "overlay", "save_overlay", "explain_images", "explain_run"]


def _is_input_layer(layer) -> bool:
    return type(layer).__name__ == "InputLayer"


def _output_rank(layer) -> int | None:
    try:
        out = layer.output
    except (AttributeError, ValueError):
        return None
    if isinstance(out, (list, tuple)):
        return None
    shape = getattr(out, "shape", None)
    return None if shape is None else len(shape)


def find_target_layer(model) -> str:
    """Name of the last layer whose output is a 2D (rank 4) or 3D (rank 5) feature map.

    Input layers and layers producing the model's output are skipped, so for a classifier this is the
    last convolutional block before global pooling.

    Args:
        model: a built functional or Sequential ``keras.Model``.

    Returns:
        The layer name.

    Raises:
        ValueError: when the model has no such layer (e.g. a dense-only model).
    """
    outputs = {id(o) for o in (model.outputs or [])}
    for layer in reversed(model.layers):
        if _is_input_layer(layer):
            continue
        rank = _output_rank(layer)
        if rank in (4, 5) and id(layer.output) not in outputs:
            return layer.name
    raise ValueError(
        f"model {model.name!r} has no layer with a 4-D or 5-D (2D/3D feature map) output to explain; "
        "pass layer_name= explicitly"
    )


def _score_tensors(model):
    """(tensor to differentiate, kind) where kind says whether it is already a logit."""
    import keras

    out_layer = None
    for layer in reversed(model.layers):
        if layer.name == "predictions":
            out_layer = layer
            break
    if out_layer is None:
        out_layer = model.layers[-1]
    activation = getattr(out_layer, "activation", None)
    act_name = getattr(activation, "__name__", "")
    if isinstance(out_layer, keras.layers.Dense) and act_name in ("sigmoid", "softmax"):
        return out_layer, "dense"
    if isinstance(out_layer, keras.layers.Activation) and act_name in ("sigmoid", "softmax"):
        return out_layer, "activation"
    return out_layer, "output"


def _resize_to(cams: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear (2D) / trilinear (3D, separable) upsampling of (N, *spatial) maps to ``size``."""
    import tensorflow as tf

    x = tf.convert_to_tensor(cams[..., None], tf.float32)
    if cams.ndim == 3:
        x = tf.image.resize(x, size, method="bilinear")
        return x.numpy()[..., 0]
    n, d, h, w = cams.shape
    x = tf.reshape(x, (n * d, h, w, 1))
    x = tf.image.resize(x, size[1:], method="bilinear")  # (n*d, H, W, 1)
    x = tf.reshape(x, (n, d, size[1] * size[2], 1))
    x = tf.image.resize(x, (size[0], size[1] * size[2]), method="bilinear")  # along depth only
    return tf.reshape(x, (n, size[0], size[1], size[2])).numpy()


def grad_cam(model, images, class_index: int | Sequence[int] | None = None, layer_name: str | None = None,
             *, batch_size: int = 16, normalize: bool = True) -> np.ndarray:
    """Grad-CAM heatmaps for a batch of 2D or 3D images.

    Args:
        model: Keras classifier (functional or Sequential) taking (N, H, W, C) or (N, D, H, W, C).
        images: array of preprocessed model inputs, same layout (a single image without the batch axis
            is accepted too).
        class_index: output unit to explain — an int for all images, one per image, or None for the
            predicted one (argmax; the single unit of a binary sigmoid head).
        layer_name: feature-map layer; default :func:`find_target_layer`.
        batch_size: images per gradient computation.
        normalize: divide each map by its maximum (maps then lie in [0, 1]).

    Returns:
        float32 heatmaps of shape (N, H, W) or (N, D, H, W), the input's spatial size.

    Raises:
        ValueError: wrong input rank, unknown layer, or a class index outside the output units.
    """
    import keras
    import tensorflow as tf

    x_all = np.asarray(images, dtype=np.float32)
    in_rank = len(model.inputs[0].shape)
    if x_all.ndim == in_rank - 1:
        x_all = x_all[None]
    if x_all.ndim != in_rank or x_all.ndim not in (4, 5):
        raise ValueError(
            f"images must be (N, H, W, C) or (N, D, H, W, C) matching the model input {tuple(model.inputs[0].shape)}. "
            f"Received shape: {np.asarray(images).shape}"
        )
    layer_name = layer_name or find_target_layer(model)
    try:
        target = model.get_layer(layer_name)
    except ValueError:
        raise ValueError(f"layer_name {layer_name!r} is not a layer of model {model.name!r}") from None
    if _output_rank(target) not in (4, 5):
        raise ValueError(f"layer {layer_name!r} does not output a 2D/3D feature map (rank 4/5)")
    out_layer, kind = _score_tensors(model)
    head_in = out_layer.input if kind in ("dense", "activation") else out_layer.output
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    grad_model = keras.Model(inputs, [target.output, head_in, model.outputs[0]])
    n_units = int(model.outputs[0].shape[-1])
    n = x_all.shape[0]
    if class_index is None:
        targets = None
    else:
        targets = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (n,))
        if targets.size and (targets.min() < 0 or targets.max() >= n_units):
            raise ValueError(f"class_index must be in [0, {n_units}) for this model. Received: {class_index}")
    cams = []
    for start in range(0, n, batch_size):
        xb = tf.convert_to_tensor(x_all[start:start + batch_size])
        with tf.GradientTape() as tape:
            fmap, head, probs = grad_model(xb, training=False)
            tape.watch(fmap)
            if kind == "dense":
                logits = tf.matmul(tf.cast(head, tf.float32), tf.cast(out_layer.kernel, tf.float32))
                if out_layer.use_bias:
                    logits = logits + tf.cast(out_layer.bias, tf.float32)
            else:
                logits = tf.cast(head, tf.float32)
            logits = tf.reshape(logits, (tf.shape(logits)[0], -1))
            if targets is None:
                idx = tf.argmax(probs, axis=-1) if n_units > 1 else tf.zeros(tf.shape(probs)[0], tf.int64)
            else:
                idx = tf.constant(targets[start:start + batch_size])
            score = tf.reduce_sum(tf.gather(logits, idx, axis=1, batch_dims=1))
        grads = tf.cast(tape.gradient(score, fmap), tf.float32)
        fmap = tf.cast(fmap, tf.float32)
        spatial_axes = list(range(1, len(fmap.shape) - 1))
        weights = tf.reduce_mean(grads, axis=spatial_axes, keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1))
        cams.append(cam.numpy())
    cams = np.concatenate(cams, axis=0)
    size = x_all.shape[1:-1]
    if cams.shape[1:] != size:
        cams = _resize_to(cams, size)
    cams = np.maximum(cams, 0.0).astype(np.float32)
    if normalize:
        peak = cams.reshape(n, -1).max(axis=1)
        cams = cams / np.where(peak > 0, peak, 1.0).reshape((n,) + (1,) * (cams.ndim - 1))
    return cams


def _to_gray01(image: np.ndarray) -> np.ndarray:
    g = image.mean(axis=-1) if image.ndim == 3 else image
    g = g.astype(np.float64)
    lo, hi = np.percentile(g, [1, 99]) if g.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = float(g.min()), float(g.max())
    return np.clip((g - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(g)


def overlay(image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.45, cmap: str = "jet") -> np.ndarray:
    """Blend a heatmap over an image.

    Args:
        image: (H, W) or (H, W, C) image (any range; shown with a 1-99 percentile stretch, channels averaged).
        heatmap: (H, W) values in [0, 1].
        alpha: heatmap opacity, scaled by the heat so cold regions show the image.
        cmap: matplotlib colormap name.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    import matplotlib

    gray = _to_gray01(np.asarray(image))
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0, 1)
    if gray.shape != heat.shape:
        raise ValueError(f"image and heatmap must share the spatial shape. Received: {gray.shape} and {heat.shape}")
    colours = matplotlib.colormaps[cmap](heat)[..., :3]
    a = alpha * heat[..., None]
    rgb = (1 - a) * gray[..., None] + a * colours
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def _mid_slices(volume: np.ndarray) -> list[np.ndarray]:
    d, h, w = volume.shape[:3]
    return [volume[d // 2], volume[:, h // 2], volume[:, :, w // 2]]


def save_overlay(path, image: np.ndarray, heatmap: np.ndarray, *, alpha: float = 0.45) -> pathlib.Path:
    """Write the overlay PNG: the image for 2D, the three orthogonal mid-slices side by side for 3D.

    Args:
        path: output file (``.png``); parent folders are created.
        image: (H, W, C) or (D, H, W, C) model input.
        heatmap: (H, W) or (D, H, W).
        alpha: heatmap opacity.

    Returns:
        The written path.
    """
    import matplotlib.image as mpimg

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.asarray(image)
    heatmap = np.asarray(heatmap)
    if heatmap.ndim == 2:
        rgb = overlay(image, heatmap, alpha=alpha)
    elif heatmap.ndim == 3:
        panels = [overlay(i, h, alpha=alpha) for i, h in zip(_mid_slices(image), _mid_slices(heatmap))]
        height = max(p.shape[0] for p in panels)
        padded = [np.pad(p, ((0, height - p.shape[0]), (0, 2), (0, 0))) for p in panels]
        rgb = np.concatenate(padded, axis=1)[:, :-2]
    else:
        raise ValueError(f"heatmap must be (H, W) or (D, H, W). Received shape: {heatmap.shape}")
    mpimg.imsave(path, rgb)
    return path


def cam_on_source(cam: np.ndarray, amap) -> np.ndarray:
    """A model-grid heatmap on the source grid: linear interpolation through the chain's geometric steps
    (``medtf.preprocess.grid.AxisMap``); source voxels outside the model grid get 0."""
    from scipy import ndimage

    cam = np.asarray(cam, dtype=np.float64)
    axes = []
    valid = np.ones(amap.in_shape, dtype=bool)
    for axis, (n_src, n_out, off, k) in enumerate(zip(amap.in_shape, amap.out_shape, amap.offset, amap.scale)):
        r = (np.arange(n_src, dtype=np.float64) - off) / k
        axes.append(r)
        ok = (r >= -0.5) & (r <= n_out - 0.5)
        shape = [1] * len(amap.in_shape)
        shape[axis] = n_src
        valid &= ok.reshape(shape)
    coords = np.meshgrid(*axes, indexing="ij")
    out = ndimage.map_coordinates(cam, coords, order=1, mode="nearest")
    return np.where(valid, out, 0.0)


def save_figure(path, image: np.ndarray, heatmap: np.ndarray, title: str, *, alpha: float = 0.45,
                layer: str | None = None) -> pathlib.Path:
    """The Grad-CAM figure at the source image's resolution: the image (1-99 percentile stretch), the
    heatmap over it, a title (class, probability) and a colour bar; 3D: the three orthogonal mid-slices.

    Args:
        path: output ``.png``.
        image: (H, W[, C]) or (D, H, W[, C]) source image (raw values).
        heatmap: the same spatial shape, values in [0, 1].
        title: the figure title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.asarray(image)
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0, 1)
    if image.ndim == heat.ndim + 1:
        image = image.mean(axis=-1)
    pairs = [(image, heat)] if heat.ndim == 2 else list(zip(_mid_slices(image), _mid_slices(heat)))
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.2 * len(pairs) + 0.8, 4.4), squeeze=False)
    mappable = None
    for ax, (img, h) in zip(axes[0], pairs):
        ax.imshow(_to_gray01(img), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        mappable = ax.imshow(h, cmap="jet", vmin=0, vmax=1, alpha=alpha * (h > 0.05), interpolation="bilinear")
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(mappable, ax=axes[0].tolist(), fraction=0.046, pad=0.04)
    bar.set_label("Grad-CAM, relative importance" + (f" ({layer})" if layer else ""))
    fig.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def explain_images(model, images, out_dir, *, keys: Sequence[str] | None = None, class_index=None,
                   layer_name: str | None = None, class_names: Sequence[str] | None = None,
                   sources: Sequence | None = None) -> list[dict]:
    """Grad-CAM + overlay PNGs for a batch of preprocessed images.

    Args:
        model: the classifier.
        images: (N, H, W, C) or (N, D, H, W, C) preprocessed inputs.
        out_dir: folder for ``case_XXXX_gradcam.png``.
        keys: pseudonymous keys recorded next to each PNG (never file names or patient IDs).
        class_index, layer_name: see :func:`grad_cam`.
        class_names: names of the output units, for the summary and the titles.
        sources: optional ``(source image, AxisMap)`` per image: the PNG then shows the source image at
            its own resolution with the heatmap mapped onto it (:func:`save_figure`); else the model input.

    Returns:
        One dict per image: ``case``, ``key``, ``png``, ``class_index``, ``class_name``, ``probabilities``,
        ``peak`` (voxel index of the heatmap maximum), ``layer``.
    """
    out_dir = pathlib.Path(out_dir)
    x = np.asarray(images, dtype=np.float32)
    layer_name = layer_name or find_target_layer(model)
    probs = np.asarray(model.predict(x, verbose=0), dtype=np.float64).reshape(x.shape[0], -1)
    if class_index is None:
        chosen = np.argmax(probs, axis=1) if probs.shape[1] > 1 else np.zeros(x.shape[0], np.int64)
    else:
        chosen = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (x.shape[0],))
    cams = grad_cam(model, x, chosen, layer_name)
    rows = []
    for i in range(x.shape[0]):
        case = f"case_{i + 1:04d}"
        c = int(chosen[i])
        name = class_names[c] if class_names is not None and c < len(class_names) else str(c)
        p_c = float(probs[i][c]) if probs.shape[1] > 1 else float(probs[i][0])
        if probs.shape[1] == 1 and class_names is not None and len(class_names) == 2:
            name = f"P({class_names[1]})"
        title = f"{case}: {name} = {p_c:.3f}"
        shown = list(x[i].shape[:-1])
        if sources is not None:
            src, amap = sources[i]
            png = save_figure(out_dir / f"{case}_gradcam.png", src, cam_on_source(cams[i], amap), title,
                              layer=layer_name)
            shown = list(amap.in_shape)
        else:
            png = save_figure(out_dir / f"{case}_gradcam.png", x[i], cams[i], title, layer=layer_name)
        rows.append({
            "case": case,
            "key": keys[i] if keys is not None else case,
            "png": png.name,
            "class_index": c,
            "class_name": class_names[c] if class_names is not None and c < len(class_names) else None,
            "probabilities": probs[i].tolist(),
            "peak": [int(v) for v in np.unravel_index(int(np.argmax(cams[i])), cams[i].shape)],
            "shown_shape": shown,
            "title": title,
            "layer": layer_name,
        })
    return rows


def _read_inputs(inputs: Sequence, mode: str = "auto"):
    """Images (with their discovery index) from files/folders through ``medtf.io``; rejected paths listed.

    Patient keys come from an ephemeral pseudonymizer: explain outputs never carry them anyway.
    """
    import os

    from medtf.io.deid import Pseudonymizer
    from medtf.io.discover import discover, read_unit
    from medtf.io.types import ReadError

    pseudo = Pseudonymizer(os.urandom(32))
    units, rejected = discover(list(inputs), pseudonymizer=pseudo, mode=mode)
    images = []
    for u, unit in enumerate(units):
        try:
            for img in read_unit(unit, pseudonymizer=pseudo):
                images.append((u, unit, img))
        except ReadError as exc:
            rejected.append((exc.path, exc.reason))
    return images, rejected


def explain_run(run_dir, inputs: Sequence, out_dir, *, class_index: int | None = None, layer_name: str | None = None,
                mode: str = "auto") -> dict:
    """Grad-CAM overlays for DICOM/NIfTI/PNG inputs with a trained run.

    Inputs are read through ``medtf.io`` (files or folders; DICOM slices of one series become a volume in
    ``mode="auto"``), preprocessed with the run's ``Preprocessing`` via
    the NumPy reference of ``medtf.preprocess`` (the run's whole chain from raw input) and explained with :func:`grad_cam`. Writes
    ``case_XXXX_gradcam.png`` (mid-slices for 3D) and ``explain.json`` into ``out_dir``; cases are numbered in
    discovery order (sorted source keys) and no file names or patient identifiers are written.

    Args:
        run_dir: run folder (``model.keras`` + ``model.json``).
        inputs: files and/or folders.
        out_dir: output folder.
        class_index: output unit to explain (default: the predicted class; the positive unit for binary).
        layer_name: feature-map layer (default: found automatically).
        mode: ``medtf.io`` discovery mode ("auto" | "volume" | "slice").

    Returns:
        ``{"cases": [...], "rejected": n, "layer": name}`` (also written as ``explain.json``).

    Raises:
        ValueError: no readable input, a segmentation/restoration run, or images whose preprocessed
            shape does not fit the model (the message names the input).
    """
    import json

    from medtf.preprocess import apply_chain
    from medtf.training.run import RunInfo, load_model

    info = RunInfo.load(run_dir)
    info.warn_if_incomplete()
    if info.task not in ("binary", "multiclass", "multilabel", "ordinal"):
        raise ValueError(f"{run_dir}: Grad-CAM explains classifiers; this run's task is {info.task!r}")
    model = load_model(run_dir)
    images, rejected = _read_inputs(inputs, mode)
    in_shape = tuple(model.inputs[0].shape[1:])
    from medtf.preprocess import chain_map

    xs, units, sources = [], [], []
    for u, unit, img in images:
        try:
            x = apply_chain(img.array, info.chain, img.spacing)
        except ValueError as exc:
            raise ValueError(f"{unit.paths[0]}: {exc}") from None
        if x.ndim != len(in_shape) or any(a is not None and a != b for a, b in zip(in_shape, x.shape)):
            raise ValueError(
                f"{unit.paths[0]}: preprocessed image shape {x.shape} does not fit the model input {in_shape} "
                f"(a {img.spatial_dims}D image for a {info.spatial_dims}D model?)"
            )
        xs.append(x)
        units.append(u)
        sources.append((img.array, chain_map(info.chain, img.array.shape[:-1], img.spacing)))
    if not xs:
        detail = "; ".join(f"{p}: {r}" for p, r in rejected[:5])
        from medtf.io.types import NoReadableInput

        raise NoReadableInput(f"no readable image among the inputs{': ' + detail if detail else ''}")
    layer_name = layer_name or find_target_layer(model)
    out_dir = pathlib.Path(out_dir)
    rows = explain_images(model, np.stack(xs), out_dir, class_index=class_index, layer_name=layer_name,
                          class_names=list(info.class_names), sources=sources)
    for row, u in zip(rows, units):
        row["input_unit"] = int(u)
        row.pop("key", None)
    result = {"run": {"name": info.name, "task": info.task}, "layer": layer_name, "cases": rows,
              "rejected": len(rejected)}
    (out_dir / "explain.json").write_text(json.dumps(result, indent=1) + "\n")
    return result

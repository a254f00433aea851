"""``build_dataset``: records → (x, y[, w]) batches for ``model.fit``.

Stages (training=True unless noted):

1. interleave the split's shards (shard order shuffled when training), parse by the record schema and
   apply the deterministic ``Preprocessing`` (intensity → channels → size);
2. optional cache (memory or file) of these deterministic examples;
3. class balancing (over-/under-sampling) or shuffling; repeat;
4. per-example stateless seeds (``Dataset.random``, new each epoch when training, fixed otherwise);
5. patch sampling relative to the mask (also at evaluation, with fixed seeds); augmentation;
   restoration records with paired targets (``tfrecord-convert --targets``): x = the stored input, y = the
   stored target, patches cut at the same place and geometric ops drawn once for both (see
   :func:`restoration_pair`);
6. label encoding, sample weights; batch; mixup/cutmix; channel repetition (1 → N, done last on
   whole batches: identical values, a third of the augmentation work); prefetch(AUTOTUNE).

Fast path (2D records, a fixed ``preprocessing.size``, no mask, cache, re-sampling or patches): the
*serialized* records are shuffled (far less memory than decoded images), batched, and parsed and
preprocessed a batch at a time (``tf.io.parse_example`` + one resize per batch; batches whose images
differ in size fall back to per-example preprocessing inside the same map). Evaluation batches come
straight out of that map; training unbatches them for the per-example augmentation.

The same ``seed`` reproduces the same batches (with ``deterministic=True``).
"""

from __future__ import annotations

import os

import tensorflow as tf

from medtf.data import augment as aug
from medtf.data import parse as parse_mod
from medtf.data import sampling, transforms
from medtf.data.config import INTENSITY_OPS, DataConfig
from medtf.preprocess import tf_ops as pre
from medtf.records.process import conversion_spec
from medtf.records.schema import feature_spec as schema_feature_spec

AUTOTUNE = tf.data.AUTOTUNE


def _unbatch(ds: tf.data.Dataset) -> tf.data.Dataset:
    """``ds.unbatch()`` without its crash: TF 2.21's unbatch segfaults on a zero-size component (the
    (B, 0) label of unlabelled records); ``flat_map(from_tensor_slices)`` does the same safely."""
    return ds.flat_map(lambda *t: tf.data.Dataset.from_tensor_slices(t if len(t) > 1 else t[0]))

# The map functions use Python control flow on static values only (tensor branches use tf.cond
# explicitly), so AutoGraph conversion is skipped: it only slows tracing down.
_no_autograph = tf.autograph.experimental.do_not_convert
_NEEDS_CLASSES = ("onehot", "multilabel", "ordinal", "mask")


def _resize_dynamic(x, size):
    """Linear (half-pixel, no antialiasing) resize of (spatial..., C) ``x`` to the tensor ``size`` — what
    ``medtf.preprocess.tf_ops.resize`` does for static sizes; 3D resizes (H, W) per slice, then D."""
    x = tf.cast(x, tf.float32)
    if x.shape.rank == 3:
        return tf.image.resize(x[None], size, method="bilinear", antialias=False)[0]
    s = tf.shape(x)
    c = x.shape[-1] if x.shape[-1] is not None else s[3]
    hw = tf.image.resize(x, size[1:], method="bilinear", antialias=False)  # (D, H', W', C): slices as a batch
    t = tf.transpose(hw, [1, 0, 2, 3])  # (H', D, W', C)
    t = tf.image.resize(t, tf.stack([size[0], size[2]]), method="bilinear", antialias=False)  # W' unchanged: exact
    return tf.reshape(tf.transpose(t, [1, 0, 2, 3]), tf.concat([size, [c]], 0))


def restoration_pair(image, target, spec):
    """``(x, y)`` of a record with a paired target: the training-stage preprocessing ``spec`` applied to the
    stored input and to the stored target.

    Super-resolution (target grid = k × input grid): the input is first resized to the target grid with
    linear interpolation (half-pixel centres, as every medtf resize), so the model maps a target-sized
    image to a target-sized image and learns the correction of the interpolated input with its residual
    skip (VDSR-style, Kim et al. 2016) — ``restoration_unet`` with ``scale=1`` serves denoising and
    super-resolution alike, geometric augmentation and patches act on one grid, and an untrained
    residual model starts at the interpolated input. Per-image intensity statistics (``zscore``,
    ``range``) are computed on x and y separately: use ``none`` or ``scale`` for restoration.
    """
    image, target = tf.convert_to_tensor(image), tf.convert_to_tensor(target)
    size = tf.shape(target)[:-1]
    x = tf.cond(tf.reduce_all(tf.equal(tf.shape(image)[:-1], size)), lambda: tf.cast(image, tf.float32),
                lambda: _resize_dynamic(image, size))
    x = tf.ensure_shape(x, [None] * (target.shape.rank - 1) + [image.shape[-1]])
    return pre.apply(x, spec, repeat=False), pre.apply(target, spec, repeat=False)


def _joint_geometric(image, target, seed, augment):
    """The geometric ops of ``augment`` with one random draw for the (same-grid) input and target: they are
    moved together as the channels of one tensor (linear interpolation for both)."""
    cx, cy = image.shape[-1], target.shape[-1]
    if cx is None or cy is None:
        raise ValueError("restoration pairs need known channel counts (manifest 'channels') for joint augmentation")
    both, _ = aug.augment_example(tf.concat([image, target], -1), None, seed, augment, stage="geometric")
    return both[..., :cx], both[..., cx:]


def resolve_num_classes(config: DataConfig, manifest: dict, label_size: int | None = None) -> int | None:
    """``config.num_classes``, else the manifest's ``label_names`` length, else (multilabel) the
    record label length; None when the label mode does not need it.

    Raises:
        ValueError: the label mode needs a class count that nobody provides.
    """
    if config.num_classes is not None:
        return int(config.num_classes)
    names = manifest.get("label_names")
    if names:
        return len(names)
    if config.label_mode == "multilabel" and label_size:
        return int(label_size)
    if config.label_mode in _NEEDS_CLASSES:
        raise ValueError(
            f"label_mode {config.label_mode!r} needs num_classes: set DataConfig.num_classes "
            "(the manifest has no label_names)"
        )
    return None


def _check(config: DataConfig, manifest: dict, info: dict, records_dir) -> None:
    conversion = conversion_spec(manifest)
    if conversion is not None and conversion.intensity == "window" and config.preprocessing.intensity == "window":
        raise ValueError(
            f"{records_dir}: records already store windowed values in [0, 1] (conversion: "
            f"{conversion.describe()}); preprocessing.intensity='window' would window them again — use 'none'"
        )
    if config.preprocessing.spacing is not None:
        raise ValueError(
            f"{records_dir}: preprocessing.spacing is applied at conversion (tfrecord-convert --spacing), where "
            "the source geometry is known; remove it from data.preprocessing"
        )
    if config.preprocessing.voi:
        raise ValueError(f"{records_dir}: preprocessing.voi is a reading step (tfrecord-convert --voi); remove it "
                         "from data.preprocessing")
    if config.label_mode == "mask" and not info["has_mask"]:
        raise ValueError(f"{records_dir}: label_mode='mask' needs records with masks; this split has none")
    if config.label_mode not in ("mask", "image") and info["label_size"] == 0:
        raise ValueError(f"{records_dir}: label_mode={config.label_mode!r} needs labels; the records are unlabelled")
    if config.patch is not None:
        rank = parse_mod.spatial_rank(manifest)
        if len(config.patch.size) != rank:
            raise ValueError(f"patch size {config.patch.size} needs {rank} values for {rank}D records")


def _output_channels_before_repeat(spec, channels_in: int | None) -> int | None:
    c = len(spec.windows) if spec.intensity == "window" else channels_in
    if c is not None and spec.channels == 1:
        c = 1
    return c


def _build(records_dir, split: str, config: DataConfig, *, training: bool, seed: int, keep_mask: bool,
           as_tuple: bool):
    """The pipeline up to (not including) the final batching. Returns ``(dataset, batched)``."""
    records_dir = os.fspath(records_dir)
    manifest = parse_mod.read_manifest(records_dir)
    info = parse_mod.probe(records_dir, split, manifest)
    _check(config, manifest, info, records_dir)
    num_classes = resolve_num_classes(config, manifest, info["label_size"])
    spec = config.preprocessing
    use_mask = info["has_mask"] and (keep_mask or config.label_mode == "mask" or config.patch is not None)
    # restoration on records with paired targets: y is the stored target, not a degraded copy of x
    paired = config.label_mode == "image" and info.get("has_target", False)
    det = config.deterministic
    parse_fn = parse_mod.make_parse_fn(manifest, with_mask=use_mask, with_target=paired)
    with_w = training and config.class_balance == "weights"
    augment = config.augment_config if training else None
    has_ops = augment is not None and bool(augment.ops)
    mode = config.label_mode
    # Restoration: the intensity ops are the degradation (noise, blur...), applied at evaluation too,
    # with the fixed evaluation seeds; geometric ops only augment training.
    # Records with paired targets are never degraded: their intensity ops (only when the config lists them)
    # augment the training inputs.
    degrade = (mode == "image" and not paired
               and any(o.name in INTENSITY_OPS and o.p > 0 for o in config.augment_config.ops))
    class_weights = None
    if with_w:
        class_weights = tf.constant(sampling.class_weights_from_manifest(manifest, split, num_classes))
    patch = config.patch
    needs_seed = patch is not None or has_ops or degrade
    balance = config.class_balance if training and config.class_balance in ("oversample", "undersample") else None
    rank = parse_mod.spatial_rank(manifest)
    c_in = manifest.get("channels")
    vectorised = (rank == 2 and not use_mask and spec.size is not None and bool(c_in) and not config.cache
                  and balance is None and patch is None and not paired)

    @_no_autograph
    def prepare(serialized):
        e = parse_fn(serialized)
        if paired:
            x, y = restoration_pair(e["image"], e["target"], spec)
            return {"image": x, "target": y, "label": e["label"]}
        if use_mask:
            image, mask = pre.apply(e["image"], spec, mask=e["mask"], repeat=False)
            return {"image": image, "label": e["label"], "mask": mask}
        return {"image": pre.apply(e["image"], spec, repeat=False), "label": e["label"]}

    @_no_autograph
    def prepare_batch(serialized):
        """Batched twin of ``prepare`` (2D, fixed output size): parse_example + one resize per batch."""
        fs = schema_feature_spec()
        p = tf.io.parse_example(serialized, {k: fs[k] for k in ("image", "image_shape", "label")})
        shapes = tf.sparse.to_dense(p["image_shape"])
        lengths = tf.strings.length(p["image"])
        uniform = tf.reduce_all(tf.equal(shapes, shapes[:1])) & tf.reduce_all(tf.equal(lengths, lengths[:1]))
        out_c = _output_channels_before_repeat(spec, int(c_in))
        out_spec = tf.TensorSpec(list(spec.size) + [out_c], tf.float32)

        def together():
            x = tf.io.decode_raw(p["image"], tf.dtypes.as_dtype(manifest["image_dtype"]), little_endian=True)
            x = tf.reshape(x, tf.concat([tf.shape(serialized, out_type=tf.int64), shapes[0]], 0))
            x = tf.ensure_shape(tf.cast(x, tf.float32), [None, None, None, int(c_in)])
            return tf.ensure_shape(pre.apply(x, spec, batched=True, repeat=False), [None] + out_spec.shape.as_list())

        def one_by_one():
            return tf.map_fn(lambda r: prepare(r)["image"], serialized, fn_output_signature=out_spec)

        images = tf.cond(tf.size(shapes) > 0, lambda: tf.cond(uniform, together, one_by_one),
                         lambda: tf.zeros([0] + out_spec.shape.as_list()))
        return {"image": images, "label": tf.sparse.to_dense(p["label"])}

    def output(e):
        if not as_tuple:
            return e
        return (e["image"], e["target"], e["weight"]) if with_w else (e["image"], e["target"])

    @_no_autograph
    def finish(e, s):
        """Augment (needs ``s``), encode labels, sample weights; works on examples or (un-augmented) batches."""
        image = e["image"]
        mask = e.get("mask")
        target = None
        if paired:
            target = e["target"]
            if has_ops:
                image, target = _joint_geometric(image, target, s, augment)
                image, _ = aug.augment_example(image, None, tf.random.experimental.stateless_fold_in(s, 1), augment,
                                               stage="intensity")
        elif mode == "image":
            if has_ops:
                image, mask = aug.augment_example(image, mask, s, augment, stage="geometric")
            target = image
            if degrade:
                image, mask = aug.augment_example(image, mask, tf.random.experimental.stateless_fold_in(s, 1),
                                                  config.augment_config, stage="intensity")
        elif has_ops:
            image, mask = aug.augment_example(image, mask, s, augment)
        if mode == "mask":
            target = transforms.encode_mask(mask, num_classes, config.mask_onehot)
        elif mode != "image":
            target = transforms.encode_label(e["label"], mode, num_classes)
        if not as_tuple:  # examples for preview & co. carry the full channel count
            image = pre.map_channels(image, spec.channels, repeat_only=True)
            target = pre.map_channels(target, spec.channels, repeat_only=True) if mode == "image" else target
        out = {"image": image, "target": target, "label": e["label"]}
        if mask is not None:
            out["mask"] = mask
        if class_weights is not None:
            out["weight"] = tf.gather(class_weights, e["label"][..., 0])
        return output(out)

    def with_seeds(ds):
        """Zip per-example stateless seeds [seed, r]; new r each epoch when training, fixed otherwise."""
        rand = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=training)
        return tf.data.Dataset.zip(ds, rand.map(lambda r: tf.stack([tf.constant(seed, tf.int64), r])))

    files = parse_mod.shard_files(records_dir, split, manifest)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training and len(files) > 1:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if training and len(files) > 1:  # mix shards; evaluation reads them in manifest order
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                           num_parallel_calls=AUTOTUNE, deterministic=det)
    else:
        ds = tf.data.TFRecordDataset(files)

    if not config.cache and balance is None and patch is None:
        # Shuffle the serialized records: far less memory than shuffling decoded images.
        if training:
            ds = ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
            if config.repeat:
                ds = ds.repeat()
        if vectorised:
            final = not needs_seed and as_tuple
            ds = ds.batch(config.batch_size, drop_remainder=config.drop_remainder and final)
            if final:  # evaluation: the batches are the output, channels repeated in the same map
                ds = ds.map(_no_autograph(lambda r: _repeat_batch(finish(prepare_batch(r), None), spec, mode)),
                            num_parallel_calls=AUTOTUNE, deterministic=det)
                return ds.with_options(_options(det)), True
            ds = _unbatch(ds.map(prepare_batch, num_parallel_calls=AUTOTUNE, deterministic=det))
            if needs_seed:
                ds = with_seeds(ds).map(finish, num_parallel_calls=AUTOTUNE, deterministic=det)
            else:
                ds = ds.map(_no_autograph(lambda e: finish(e, None)), num_parallel_calls=AUTOTUNE, deterministic=det)
        elif needs_seed:
            ds = with_seeds(ds).map(_no_autograph(lambda r, s: finish(prepare(r), s)),
                                    num_parallel_calls=AUTOTUNE, deterministic=det)
        else:
            ds = ds.map(_no_autograph(lambda r: finish(prepare(r), None)), num_parallel_calls=AUTOTUNE,
                        deterministic=det)
        return ds.with_options(_options(det)), False

    ds = ds.map(prepare, num_parallel_calls=AUTOTUNE, deterministic=det)
    if config.cache == "memory":
        ds = ds.cache()
    elif config.cache:
        os.makedirs(os.path.dirname(os.path.abspath(config.cache)) or ".", exist_ok=True)
        ds = ds.cache(f"{config.cache}-{split}")

    class_fn = lambda e: e["label"][0]  # noqa: E731
    if balance is not None:
        counts = sampling.class_counts_from_manifest(manifest, split, num_classes)
        if balance == "oversample":
            ds = sampling.sample_from_datasets(ds, class_fn, counts, config.class_targets, seed=seed,
                                               shuffle_buffer=config.shuffle_buffer)
            if not config.repeat:
                ds = ds.take(int(counts.sum()))
        else:
            ds = ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
            ds = sampling.rejection_resample(ds, class_fn, counts, config.class_targets, seed=seed)
            if config.repeat:
                ds = ds.repeat()
    elif training:
        ds = ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if config.repeat:
            ds = ds.repeat()

    ds = with_seeds(ds)
    if patch is not None:
        k = patch.samples_per_volume

        @_no_autograph
        def sample(e, s):
            mask = e["mask"] if use_mask else tf.zeros_like(e["image"][..., :1], tf.uint8)
            seeds = aug.split_seed(s, 2 * k)  # k for the patch centres, k for the augmentation
            if paired:  # the same random window of the input and the target (uniform, inside the image)
                pieces = [sampling.random_window([e["image"], e["target"]], patch.size, seeds[i]) for i in range(k)]
                return ({"image": tf.stack([p[0] for p in pieces]), "target": tf.stack([p[1] for p in pieces]),
                         "label": tf.tile(e["label"][None], [k, 1])}, tf.stack(seeds[k:]))
            pieces = [sampling.random_patch_3d(e["image"], mask, patch.size, patch.pos_ratio, seeds[i])
                      for i in range(k)]
            out = {"image": tf.stack([p[0] for p in pieces]), "label": tf.tile(e["label"][None], [k, 1])}
            if use_mask:
                out["mask"] = tf.stack([p[1] for p in pieces])
            return out, tf.stack(seeds[k:])

        ds = _unbatch(ds.map(sample, num_parallel_calls=AUTOTUNE, deterministic=det))

    ds = ds.map(finish, num_parallel_calls=AUTOTUNE, deterministic=det)
    return ds.with_options(_options(det)), False


def _repeat_batch(batch: tuple, spec, mode: str) -> tuple:
    """1 → N channel repetition of x (and of y for restoration) in an ``(x, y[, w])`` batch."""
    x = pre.map_channels(batch[0], spec.channels, repeat_only=True)
    y = pre.map_channels(batch[1], spec.channels, repeat_only=True) if mode == "image" else batch[1]
    return (x, y) + tuple(batch[2:])


def _options(deterministic: bool) -> tf.data.Options:
    opts = tf.data.Options()
    opts.deterministic = deterministic
    return opts


def build_examples(records_dir, split: str, config: DataConfig, *, training: bool, seed: int = 0,
                   keep_mask: bool = False) -> tf.data.Dataset:
    """Unbatched, augmented examples as dicts: ``image`` (x), ``target`` (encoded y), ``label`` (record
    labels), ``mask`` (when used or ``keep_mask``) and ``weight`` (when ``class_balance == "weights"``).

    Same arguments as ``build_dataset`` (plus ``keep_mask``: carry the records' masks, moved with the
    image, even when the label mode does not need them); used by ``medtf data preview``. Mixup/cutmix
    (batch ops) are not applied.
    """
    ds, batched = _build(records_dir, split, config, training=training, seed=seed, keep_mask=keep_mask,
                         as_tuple=False)
    return _unbatch(ds) if batched else ds


def build_dataset(records_dir, split: str, config: DataConfig, *, training: bool, seed: int = 0) -> tf.data.Dataset:
    """Batched ``(x, y)`` or ``(x, y, sample_weight)`` dataset ready for ``model.fit``.

    Args:
        records_dir: directory with ``manifest.json`` and ``{split}-*.tfrecord`` shards.
        split: split name ("train", "val", "test", ...).
        config: the ``DataConfig``.
        training: shuffle, balance, augment (and mixup/cutmix); evaluation keeps record order and
            applies only the deterministic preprocessing (and seeded patches when ``config.patch``).
        seed: the seed of every random choice; the same seed gives the same batches.

    Returns:
        ``tf.data.Dataset`` of batches: x float32 (B, spatial..., C); y as ``config.label_mode``
        says; w float32 (B,) when ``class_balance == "weights"`` and training.

    Raises:
        FileNotFoundError / ValueError: missing manifest, unknown split, or a config the records
            cannot satisfy (messages name the directory and what was expected).
    """
    ds, batched = _build(records_dir, split, config, training=training, seed=seed, keep_mask=False, as_tuple=True)
    det = config.deterministic
    if not batched:
        ds = ds.batch(config.batch_size, drop_remainder=config.drop_remainder,
                      num_parallel_calls=AUTOTUNE, deterministic=det)
    a = config.augment_config
    if training and a.mixes:
        is_mask = config.label_mode == "mask"

        @_no_autograph
        def mix(s, batch):
            x, y = batch[0], batch[1]
            s1, s2 = aug.split_seed(s, 2)
            if a.mixup_p > 0:
                x, yl, ym = aug.mixup(x, None if is_mask else y, s1, a.mixup_alpha, a.mixup_p,
                                      masks=y if is_mask else None)
                y = ym if is_mask else yl
            if a.cutmix_p > 0:
                x, yl, ym = aug.cutmix(x, None if is_mask else y, s2, a.cutmix_alpha, a.cutmix_p,
                                       masks=y if is_mask else None)
                y = ym if is_mask else yl
            return (x, y) + tuple(batch[2:])

        rand = tf.data.Dataset.random(seed=seed + 1, rerandomize_each_iteration=True)
        seeds = rand.map(lambda r: tf.stack([tf.constant(seed + 1, tf.int64), r]))
        ds = tf.data.Dataset.zip(seeds, ds).map(mix, num_parallel_calls=AUTOTUNE, deterministic=det)
    spec = config.preprocessing
    if not batched and spec.channels is not None and spec.channels > 1:
        # 1 → N channel repetition last, on whole batches (a no-op when the channels already match)
        ds = ds.map(lambda *b: _repeat_batch(b, spec, config.label_mode), num_parallel_calls=AUTOTUNE,
                    deterministic=det)
    if not training and config.patch is None and not config.repeat and int(ds.cardinality()) < 0:
        # One batch per batch_size records: say so, so progress bars have a total and Keras' validation pass
        # does not warn "Your input ran out of data; interrupting training" after the first epoch.
        ds = ds.apply(tf.data.experimental.assert_cardinality(steps_per_epoch(records_dir, split, config)))
    return ds.prefetch(AUTOTUNE)


def steps_per_epoch(records_dir, split: str, config: DataConfig) -> int:
    """Batches in one pass over ``split`` (from the manifest's example count)."""
    manifest = parse_mod.read_manifest(records_dir)
    n = int(manifest["splits"][split].get("examples", 0))
    if config.patch is not None:
        n *= config.patch.samples_per_volume
    b = config.batch_size
    return max(1, n // b if config.drop_remainder else -(-n // b))


__all__ = ["build_dataset", "build_examples", "resolve_num_classes", "restoration_pair", "steps_per_epoch"]

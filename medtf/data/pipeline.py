"""``build_dataset``: records → (x, y[, w]) batches for ``model.fit``.

Stages (training=True unless noted):

1. interleave the split's shards (shard order shuffled when training; without a cache the serialized
   records are shuffled here, which needs far less memory than shuffling decoded images), parse by
   the record schema and apply the deterministic ``Preprocessing`` (intensity → channels → size) in
   one fused parallel map;
2. optional cache (memory or file) of these deterministic examples;
3. class balancing (over-/under-sampling) or, with a cache, shuffling; repeat;
4. per-example stateless seeds (``Dataset.random``, new each epoch when training, fixed otherwise);
5. patch sampling relative to the mask (also at evaluation, with fixed seeds); augmentation;
6. label encoding, sample weights; batch; mixup/cutmix; prefetch(AUTOTUNE).

The same ``seed`` reproduces the same batches (with ``deterministic=True``).
"""

from __future__ import annotations

import os

import tensorflow as tf

from medtf.data import augment as aug
from medtf.data import parse as parse_mod
from medtf.data import sampling, transforms
from medtf.data.config import DataConfig

AUTOTUNE = tf.data.AUTOTUNE
# The map functions use Python control flow on static values only (tensor branches use tf.cond
# explicitly), so AutoGraph conversion is skipped: it only slows tracing down.
_no_autograph = tf.autograph.experimental.do_not_convert
_NEEDS_CLASSES = ("onehot", "multilabel", "ordinal", "mask")


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
    intensity = manifest.get("intensity") or {}
    if intensity.get("kind") == "window" and config.preprocessing.intensity == "window":
        raise ValueError(
            f"{records_dir}: records already store windowed values in [0, 1] (manifest intensity "
            f"{intensity}); preprocessing.intensity='window' would window them again — use 'none'"
        )
    if config.label_mode == "mask" and not info["has_mask"]:
        raise ValueError(f"{records_dir}: label_mode='mask' needs records with masks; this split has none")
    if config.label_mode not in ("mask", "image") and info["label_size"] == 0:
        raise ValueError(f"{records_dir}: label_mode={config.label_mode!r} needs labels; the records are unlabelled")
    if config.patch is not None:
        rank = parse_mod.spatial_rank(manifest)
        if len(config.patch.size) != rank:
            raise ValueError(f"patch size {config.patch.size} needs {rank} values for {rank}D records")


def build_examples(records_dir, split: str, config: DataConfig, *, training: bool, seed: int = 0,
                   manifest: dict | None = None, keep_mask: bool = False, as_tuple: bool = False) -> tf.data.Dataset:
    """Unbatched, augmented examples as dicts: ``image`` (x), ``target`` (encoded y), ``label`` (record
    labels), ``mask`` (when used or ``keep_mask``) and ``weight`` (when ``class_balance == "weights"``).

    Same arguments as ``build_dataset`` (plus ``keep_mask``: carry the records' masks, moved with the
    image, even when the label mode does not need them; ``as_tuple``: yield ``(x, y[, w])`` instead
    of dicts); used by it and by ``medtf data preview``.
    """
    records_dir = os.fspath(records_dir)
    manifest = manifest if manifest is not None else parse_mod.read_manifest(records_dir)
    info = parse_mod.probe(records_dir, split, manifest)
    _check(config, manifest, info, records_dir)
    num_classes = resolve_num_classes(config, manifest, info["label_size"])
    spec = config.preprocessing
    use_mask = info["has_mask"] and (keep_mask or config.label_mode == "mask" or config.patch is not None)
    det = config.deterministic
    parse_fn = parse_mod.make_parse_fn(manifest, with_mask=use_mask)
    with_w = training and config.class_balance == "weights"

    def output(e):
        if not as_tuple:
            return e
        return (e["image"], e["target"], e["weight"]) if with_w else (e["image"], e["target"])

    @_no_autograph
    def prepare(serialized):
        e = parse_fn(serialized)
        if use_mask:
            image, mask = transforms.apply_preprocessing(e["image"], spec, mask=e["mask"])
            return {"image": image, "label": e["label"], "mask": mask}
        return {"image": transforms.apply_preprocessing(e["image"], spec), "label": e["label"]}

    augment = config.augment_config if training else None
    class_weights = None
    if training and config.class_balance == "weights":
        class_weights = tf.constant(sampling.class_weights_from_manifest(manifest, split, num_classes))
    mode = config.label_mode
    patch = config.patch
    needs_seed = patch is not None or (augment is not None and bool(augment.ops))

    @_no_autograph
    def finish(e, s):
        image = e["image"]
        mask = e.get("mask")
        if augment is not None and augment.ops:
            if mode == "image":
                image, mask = aug.augment_example(image, mask, s, augment, stage="geometric")
                target = image
                image, mask = aug.augment_example(image, mask, tf.random.experimental.stateless_fold_in(s, 1),
                                                  augment, stage="intensity")
            else:
                image, mask = aug.augment_example(image, mask, s, augment)
        if mode == "image":
            if augment is None or not augment.ops:
                target = image
        elif mode == "mask":
            target = transforms.encode_mask(mask, num_classes, config.mask_onehot)
        else:
            target = transforms.encode_label(e["label"], mode, num_classes)
        out = {"image": image, "target": target, "label": e["label"]}
        if mask is not None:
            out["mask"] = mask
        if class_weights is not None:
            out["weight"] = tf.gather(class_weights, e["label"][0])
        return output(out)

    def with_seeds(ds):
        """Zip per-example stateless seeds [seed, r]; new r each epoch when training, fixed otherwise."""
        rand = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=training)
        return tf.data.Dataset.zip(ds, rand.map(lambda r: tf.stack([tf.constant(seed, tf.int64), r])))

    files = parse_mod.shard_files(records_dir, split, manifest)
    ds = tf.data.Dataset.from_tensor_slices(files)
    if training and len(files) > 1:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if len(files) > 1:
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), 8),
                           num_parallel_calls=AUTOTUNE, deterministic=det)
    else:
        ds = tf.data.TFRecordDataset(files)

    balance = config.class_balance if training and config.class_balance in ("oversample", "undersample") else None
    if not config.cache and balance is None and patch is None:
        # Fast path: shuffle the serialized records (far less memory than decoded images), then parse,
        # preprocess, augment and encode in one parallel map.
        if training:
            ds = ds.shuffle(config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
            if config.repeat:
                ds = ds.repeat()
        if needs_seed:
            ds = with_seeds(ds).map(_no_autograph(lambda r, s: finish(prepare(r), s)),
                                    num_parallel_calls=AUTOTUNE, deterministic=det)
        else:
            ds = ds.map(_no_autograph(lambda r: finish(prepare(r), None)), num_parallel_calls=AUTOTUNE,
                        deterministic=det)
        return ds.with_options(_options(det))

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
            pieces = [sampling.random_patch_3d(e["image"], mask, patch.size, patch.pos_ratio, seeds[i])
                      for i in range(k)]
            out = {"image": tf.stack([p[0] for p in pieces]), "label": tf.repeat(e["label"][None], k, 0)}
            if use_mask:
                out["mask"] = tf.stack([p[1] for p in pieces])
            return out, tf.stack(seeds[k:])

        ds = ds.map(sample, num_parallel_calls=AUTOTUNE, deterministic=det).unbatch()

    ds = ds.map(finish, num_parallel_calls=AUTOTUNE, deterministic=det)
    return ds.with_options(_options(det))


def _options(deterministic: bool) -> tf.data.Options:
    opts = tf.data.Options()
    opts.deterministic = deterministic
    return opts


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
    ds = build_examples(records_dir, split, config, training=training, seed=seed, as_tuple=True)
    ds = ds.batch(config.batch_size, drop_remainder=config.drop_remainder,
                  num_parallel_calls=AUTOTUNE, deterministic=config.deterministic)
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
        ds = tf.data.Dataset.zip(seeds, ds).map(mix, num_parallel_calls=AUTOTUNE,
                                                 deterministic=config.deterministic)
    return ds.prefetch(AUTOTUNE)


def steps_per_epoch(records_dir, split: str, config: DataConfig) -> int:
    """Batches in one pass over ``split`` (from the manifest's example count)."""
    manifest = parse_mod.read_manifest(records_dir)
    n = int(manifest["splits"][split].get("examples", 0))
    if config.patch is not None:
        n *= config.patch.samples_per_volume
    b = config.batch_size
    return max(1, n // b if config.drop_remainder else -(-n // b))


__all__ = ["build_dataset", "build_examples", "resolve_num_classes", "steps_per_epoch"]

"""``medtf data preview RECORDS --split train --out grid.png``: a PNG grid of augmented samples."""

from __future__ import annotations

import sys

EXIT_OK, EXIT_USAGE, EXIT_FAILED = 0, 2, 3


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "preview", help="write a PNG grid of augmented samples of a records split",
        description="Write a PNG grid of samples of a records split as the training pipeline produces "
                    "them (mid-slices for 3D, labels as titles, mask outlines in red).",
    )
    p.add_argument("records", help="records directory (manifest.json + shards)")
    p.add_argument("--split", default="train", help="split to show (default: train)")
    p.add_argument("--out", default="preview.png", help="output PNG path (default: preview.png)")
    p.add_argument("--config", help="YAML with a DataConfig (or a run config.yaml with a `data:` section)")
    p.add_argument("--augment", help="augmentation policy overriding the config: none|light|standard|heavy")
    p.add_argument("-n", "--num", type=int, default=16, help="number of samples (default: 16)")
    p.add_argument("--seed", type=int, default=0, help="augmentation seed (default: 0)")
    p.add_argument("--no-augment", action="store_true", help="show preprocessed samples without augmentation")
    p.set_defaults(func=run)


def _default_preprocessing(manifest: dict):
    from medtf.preprocess import Preprocessing

    from medtf.records.process import conversion_spec

    conversion = conversion_spec(manifest)
    if conversion is not None and conversion.intensity == "window":
        return Preprocessing()
    if manifest.get("image_dtype") == "uint8":
        return Preprocessing(intensity="scale", scale=255.0)
    return Preprocessing(intensity="zscore")


def run(args) -> int:
    import pathlib

    from medtf.data.config import POLICIES, DataConfig

    records = pathlib.Path(args.records)
    if not (records / "manifest.json").is_file():
        print(f"medtf data preview: RECORDS {records} must be a records directory with manifest.json", file=sys.stderr)
        return EXIT_USAGE
    if args.num < 1:
        print(f"medtf data preview: --num must be >= 1. Received: {args.num}", file=sys.stderr)
        return EXIT_USAGE
    if args.augment is not None and args.augment not in POLICIES:
        print(f"medtf data preview: --augment must be one of {POLICIES}. Received: {args.augment!r}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from medtf.records.reader import read_manifest

        manifest = read_manifest(records)
        if args.config:
            config = DataConfig.from_yaml(pathlib.Path(args.config).read_text())
        else:
            config = DataConfig(preprocessing=_default_preprocessing(manifest), augment="standard")
        if args.augment is not None:
            config = config.replace(augment=args.augment)
        # show record labels; mixup/cutmix and balancing do not apply to single examples
        import dataclasses

        a = config.augment_config
        config = config.replace(label_mode="mask" if config.label_mode == "mask" else "image",
                                class_balance=None, class_targets=None,
                                augment="none" if args.no_augment else dataclasses.replace(a, mixup_p=0.0, cutmix_p=0.0))
        if manifest["splits"].get(args.split) is None:
            print(f"medtf data preview: split {args.split!r} not in {records}; available: "
                  f"{sorted(manifest['splits'])}", file=sys.stderr)
            return EXIT_USAGE
    except (OSError, ValueError) as exc:
        print(f"medtf data preview: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from medtf.data.preview import render_preview

        out = render_preview(records, args.split, args.out, config, n=args.num, seed=args.seed,
                             training=not args.no_augment)
    except Exception as exc:  # noqa: BLE001 - report any failure as exit 3 with its message
        print(f"medtf data preview: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"wrote {out}")
    return EXIT_OK

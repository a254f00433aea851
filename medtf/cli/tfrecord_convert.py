"""``tfrecord-convert`` (also ``medtf convert``): DICOM / NIfTI / PNG / npz → patient-grouped TFRecords.

Nothing at module level imports TensorFlow or the readers, so ``--help`` answers instantly.
"""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = (
    "Convert DICOM files and series (with DICOM-SEG / RT Structure Set masks), NIfTI, NRRD, MetaImage, "
    "PNG/JPEG/GIF/TIFF and MedMNIST-style npz into sharded, "
    "patient-grouped TFRecords plus manifest.json. Every input ends in the manifest as converted "
    "(split, record key) or rejected (reason); no patient identifier is written anywhere."
)

EPILOG = """\
examples:
  tfrecord-convert dicoms/ --output records/ --labels labels.csv --split 0.7,0.15,0.15
  tfrecord-convert ct_series/ --output vol/ --mode volume --spacing 1.5 --size 64,128,128
  tfrecord-convert ct/ --output win/ --intensity window --window lung --window mediastinum
  tfrecord-convert pneumoniamnist.npz --output pneumonia/          # keeps the official splits
  tfrecord-convert /shared/ct --output /shared/records --key-file site.key --runner beam --workers 8

labels CSV: a 'path' column (relative to the input folder; a folder applies to every file below it)
and a 'label' column, or one 0/1 column per label (multi-label); an optional 'split' column.

exit codes:
  0  every input converted
  1  the run finished but some inputs were rejected (reasons in manifest.json)
  2  usage error (bad option, output folder already holds records without --resume/--overwrite)
  3  failed: nothing converted, or an unexpected error

pseudonyms: patient keys are HMAC-SHA256 of the patient ID with a site secret
($MEDTF_PSEUDONYM_KEY, --key-file, or ~/.config/medtf/pseudonym.key, created on first use).
Share the same key between runs and machines to keep patient keys stable. See docs/convert.md.
"""


def _csv_numbers(kind, name):
    def parse(value: str):
        try:
            vals = tuple(kind(v) for v in value.replace("x", ",").split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be comma-separated numbers. Received: {value!r}") from None
        if not vals or any(v <= 0 for v in vals):
            raise argparse.ArgumentTypeError(f"{name} must be positive. Received: {value!r}")
        return vals

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="files and/or folders to convert")
    parser.add_argument("--output", "-o", required=True, metavar="DIR", help="output folder for shards + manifest.json")
    parser.add_argument("--labels", metavar="CSV", help="labels CSV (path + label column(s) [+ split])")
    parser.add_argument("--mode", choices=("auto", "slice", "volume"), default="auto",
                        help="volume: one example per series; slice: one per image/frame; auto (default): "
                        "volumes for series of single-frame slices")
    parser.add_argument("--intensity", choices=("none", "raw", "window"), default=None,
                        help="none (default; 'raw' is the same): modality values (HU) stored exactly; window: one "
                        "[0,1] channel per --window (implied by --window)")
    parser.add_argument("--window", action="append", default=[], metavar="PRESET|W,L",
                        help="window preset (lung, mediastinum, abdomen, brain, bone) or WIDTH,LEVEL; repeat "
                        "(or comma-join presets) to stack windows as channels")
    parser.add_argument("--spacing", type=_csv_numbers(float, "--spacing"), metavar="MM[,MM...]",
                        help="resample to this spacing (mm; one value or one per axis: row,col / slice,row,col)")
    parser.add_argument("--size", type=_csv_numbers(int, "--size"), metavar="N[,N...]",
                        help="output size (H,W or D,H,W)")
    parser.add_argument("--keep-paths", action="store_true",
                        help="name sources by their paths relative to INPUT in records, manifest and logs (UIDs in "
                        "them still replaced) — only for data known to be anonymous; default: keyed pseudonyms "
                        "F-<hex>.dcm, since folder and file names can identify patients")
    parser.add_argument("--lookup", action="store_true",
                        help="print which input file each pseudonymous source name stands for (this terminal only; "
                        "needs the same pseudonym key), then exit; no records are written")
    parser.add_argument("--masks", default=None, metavar="DIR",
                        help="folder of masks (PNG, GIF, TIFF incl. LZW/deflate, NIfTI, NRRD/.nhdr, MetaImage "
                        ".mha/.mhd, DICOM) paired with the inputs by key: each image gets the mask with the same key, "
                        "on the same grid; every spatial step moves it with nearest neighbour. (RT Structure Sets and "
                        "DICOM-SEG go among the INPUTs, beside their series.)")
    parser.add_argument("--roi", action="append", default=[], metavar="NAME",
                        help="RT Structure Set ROI to rasterise into the series' mask (exact name, case-insensitive); "
                        "repeat to choose several: label ids 1..K in this order (default: every ROI, in ROI Number "
                        "order; where ROIs overlap the later one wins)")
    parser.add_argument("--empty-slices", type=float, default=None, metavar="FRACTION",
                        help="with --mode slice: volumes are cut into 2D slices (each keeps its mask slice); keep "
                        "every slice with foreground and this seeded fraction of the empty ones")
    parser.add_argument("--tile", default=None, metavar="N[,N]",
                        help="cut 2D images (after --spacing/--size) of the training data into non-overlapping NxN "
                        "tiles, each with its mask tile; sources whose split is already val or test stay whole")
    parser.add_argument("--pair", default=None, metavar="REGEX",
                        help="pairing key = the first group of REGEX in each file name (default: the name without "
                        "its extension), e.g. '(case_\\d+)'")
    parser.add_argument("--targets", default=None, metavar="DIR",
                        help="folder of restoration targets (full-dose, high-resolution) paired with the inputs by "
                        "key (--pair): stored with each input, on the input grid or an integer multiple k of it; "
                        "every spatial step follows the input's (linear). Not with --masks")
    parser.add_argument("--target-scale", type=_csv_numbers(int, "--target-scale"), default=None, metavar="K[,K...]",
                        help="with --targets: reject targets whose grid is not the input grid times K (default: any "
                        "integer multiple)")
    parser.add_argument("--mask-map", default=None, metavar="V=L[,V=L...]",
                        help="mask value → label (e.g. 255=1,128=2); masks holding only {0, 255} are read as {0, 1}")
    parser.add_argument("--nan-value", type=float, default=None, metavar="V",
                        help="replace NaN/Inf input values with V (default: reject such inputs, with the count)")
    parser.add_argument("--resize", choices=("resize", "crop_or_pad"), default="resize",
                        help="how --size is reached: linear resize (default) or centre crop/pad")
    parser.add_argument("--voi", action="store_true", help="apply the DICOM header's VOI LUT/window when reading "
                        "(values in [0,1]; files without one are rejected)")
    parser.add_argument("--frames", default=None, metavar="all|first|middle|each|N",
                        help="frames of multi-frame DICOM / multi-page TIFF: all (a volume; default), first, middle, "
                        "each (one example per frame; default with --mode slice) or a frame number")
    parser.add_argument("--patient-from", choices=("file", "parent"), default="file",
                        help="patient for NIfTI/PNG/JPEG/TIFF (no patient ID): each file, or its parent folder")
    parser.add_argument("--max-pixels", type=int, default=None, metavar="N",
                        help="reject headers claiming more samples than this (default 2**31) before decoding")
    parser.add_argument("--split", default="auto", metavar="FRACTIONS|input",
                        help="'0.7,0.15,0.15' (train,val,test), 'train=0.8,test=0.2', or 'input' (npz splits, "
                        "CSV split column). Default: the input's splits when every source has one, else 0.7,0.15,0.15")
    parser.add_argument("--seed", type=int, default=0, help="seed for the patient split and record order (default 0)")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    parser.add_argument("--runner", choices=("local", "beam"), default="local",
                        help="local (default): this machine's processes; beam: an Apache Beam job (pip install "
                        "medtf[beam]; DirectRunner with --workers processes unless --beam-option runner=... says "
                        "otherwise), same output (docs/scale.md)")
    parser.add_argument("--beam-option", action="append", default=[], metavar="KEY=VALUE",
                        help="Beam pipeline option, repeatable (e.g. runner=FlinkRunner, flink_master=HOST:8081); "
                        "needs --runner beam")
    parser.add_argument("--resume", action="store_true", help="finish an interrupted run in --output")
    parser.add_argument("--overwrite", action="store_true", help="replace the records already in --output")
    parser.add_argument("--key-file", metavar="PATH", help="pseudonym key file (default: $MEDTF_PSEUDONYM_KEY or "
                        "~/.config/medtf/pseudonym.key)")
    parser.add_argument("--shard-mb", type=float, default=256.0, metavar="MB", help="approximate shard size (default 256)")
    parser.add_argument("--keep-work", action="store_true", help="keep the per-source cache in DIR/.work")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _windows(values: list[str]) -> tuple:
    from medtf.preprocess import parse_windows

    return parse_windows(values)


def _read_options(args) -> dict:
    opts: dict = {}
    if args.voi:
        opts["apply_voi"] = True
    if args.frames is not None:
        opts["frames"] = int(args.frames) if args.frames.lstrip("-").isdigit() else args.frames
    if args.patient_from != "file":
        opts["patient_from"] = args.patient_from
    if args.max_pixels is not None:
        opts["max_pixels"] = args.max_pixels
    return opts


def run(args: argparse.Namespace) -> int:
    """Build a :class:`ConvertConfig` from ``args``, run it, print the summary; returns the exit code."""
    from medtf.records.convert import EXIT_FAILED, EXIT_USAGE, ConvertConfig, ConvertError, convert, format_summary
    from medtf.records.process import ProcessOptions

    if args.lookup:
        return _lookup(args)
    try:
        windows = _windows(args.window)
        intensity = args.intensity or ("window" if windows else "none")
        process = ProcessOptions(intensity=intensity, windows=windows, spacing=args.spacing, size=args.size,
                                 resize=args.resize, nan_value=args.nan_value)
        config = ConvertConfig(
            inputs=tuple(args.inputs), output=args.output, labels=args.labels, mode=args.mode, process=process,
            split=args.split, seed=args.seed, workers=args.workers, resume=args.resume, overwrite=args.overwrite,
            key_file=args.key_file, shard_mb=args.shard_mb, read_options=_read_options(args),
            progress=not args.no_progress, keep_work=args.keep_work, keep_paths=args.keep_paths,
            masks=args.masks, pair=args.pair, mask_map=_mask_map(args.mask_map), empty_slices=args.empty_slices,
            tile=_ints(args.tile, "--tile"),
            roi=tuple(args.roi),
            targets=args.targets, target_scale=args.target_scale,
        )
        if args.runner == "beam":
            from medtf.records.beam import convert_beam

            result = convert_beam(config, args.beam_option)
        elif args.beam_option:
            raise ConvertError("--beam-option needs --runner beam")
        else:
            result = convert(config)
    except ImportError as exc:
        if "pip install medtf[" in str(exc):  # an optional extra is missing (the message names it)
            print(f"tfrecord-convert: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        print(f"tfrecord-convert: failed ({type(exc).__name__}); rerun with MEDTF_DEBUG=1 for details", file=sys.stderr)
        return EXIT_FAILED
    except (ConvertError, ValueError) as exc:
        print(f"tfrecord-convert: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - reported without header values
        import os
        import traceback

        if os.environ.get("MEDTF_DEBUG"):
            traceback.print_exc()
        print(f"tfrecord-convert: failed ({type(exc).__name__}); rerun with MEDTF_DEBUG=1 for details",
              file=sys.stderr)
        return EXIT_FAILED
    print(format_summary(result.manifest))
    print(f"wrote {result.output}/manifest.json (exit code {result.exit_code})")
    if result.exit_code == EXIT_FAILED:
        n = result.manifest["counts"]["files"]
        print(f"tfrecord-convert: no readable input: {n} file(s) found, none converted"
              + (" (see the rejections above and in manifest.json)" if n else " (the input folder is empty)"),
              file=sys.stderr)
    return result.exit_code


def _mask_map(text: str | None) -> tuple:
    """``"255=1,128=2"`` → ((255, 1), (128, 2)); raises ValueError naming the bad item."""
    if not text:
        return ()
    out = []
    for item in text.split(","):
        try:
            v, label = (int(x) for x in item.split("="))
        except ValueError:
            raise ValueError(f"--mask-map items must look like '255=1'. Received: {item!r}") from None
        out.append((v, label))
    return tuple(out)


def _lookup(args) -> int:
    """``--lookup``: the pseudonymous name of every input file (and series) next to its path, on stdout."""
    import os
    import pathlib

    from medtf.io import Pseudonymizer, discover
    from medtf.io.sources import walk_inputs

    try:
        pz = Pseudonymizer.from_key_file(args.key_file) if args.key_file else Pseudonymizer.default()
        pairs, _ = walk_inputs(args.inputs)
    except (FileNotFoundError, ValueError) as exc:
        print(f"tfrecord-convert: error: {exc}", file=sys.stderr)
        return 2
    print("name\tpath")
    for path, rel in pairs:
        print(f"{pz.source(rel, keep_path=args.keep_paths)}\t{path}")
    units, _ = discover(args.inputs, pseudonymizer=pz, mode=args.mode)
    for unit in units:
        if unit.kind == "dicom_series":
            print(f"{unit.key}\t{os.path.commonpath([str(pathlib.Path(p).parent) for p in unit.paths])}")
    return 0


def build_parser(prog: str = "tfrecord-convert") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def _ints(text, option: str):
    """'256' / '256,128' → (256,) / (256, 128); None stays None."""
    if text is None:
        return None
    try:
        return tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"{option} expects integers like 256 or 256,128. Received: {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``tfrecord-convert``."""
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("interrupted (finish with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

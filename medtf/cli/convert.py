"""``medtf convert``: the same converter as ``tfrecord-convert`` (same options, same function)."""

from __future__ import annotations


def register(subparsers) -> None:
    """Add the ``convert`` subcommand (imports nothing heavy)."""
    import argparse

    from medtf.cli import tfrecord_convert

    parser = subparsers.add_parser(
        "convert",
        help="DICOM/NIfTI/PNG/npz → patient-grouped TFRecords (same as tfrecord-convert)",
        description=tfrecord_convert.DESCRIPTION,
        epilog=tfrecord_convert.EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tfrecord_convert.add_arguments(parser)
    parser.set_defaults(func=tfrecord_convert.run)

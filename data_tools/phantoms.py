#!/usr/bin/env python
"""Write synthetic DICOM/NIfTI phantoms (thin script around ``medtf.synthetic.phantoms``).

Same options as ``medtf data phantoms``::

    python data_tools/phantoms.py cxr --out /tmp/cxr --patients 20 --studies 2
    python data_tools/phantoms.py ct  --out /tmp/ct  --patients 6 --size 128 --slices 48
    python data_tools/phantoms.py mri --out /tmp/mri --patients 6
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # run from a checkout without install

from medtf.cli._data_phantoms import add_arguments, run  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="phantoms.py", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

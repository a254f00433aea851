"""`medtf data preview` writes a PNG grid; usage errors exit 2."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np

from medtf.cli import data as data_cli
from medtf.cli.main import main

from ._records import random_images, write_records


def test_preview_2d_and_3d(tmp_path, capsys):
    d2 = write_records(tmp_path / "r2", {"train": random_images(10, (24, 24, 1), with_mask=True)}, label_names=["no", "yes"])
    out = tmp_path / "png" / "grid.png"
    assert main(["data", "preview", str(d2), "--split", "train", "--out", str(out), "-n", "6", "--seed", "1"]) == 0
    img = mpimg.imread(out)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img[..., :3].std() > 0.01
    d3 = write_records(tmp_path / "r3", {"train": random_images(3, (6, 16, 16, 1), with_mask=True)})
    out3 = tmp_path / "grid3.png"
    cfg = tmp_path / "cfg.yaml"  # a run config with a data: section
    cfg.write_text("data:\n  augment: light\n  preprocessing: {intensity: scale, scale: 255.0, size: [6, 12, 12]}\n")
    assert main(["data", "preview", str(d3), "--out", str(out3), "--config", str(cfg), "--augment", "heavy"]) == 0
    assert mpimg.imread(out3).shape[0] > 100
    assert "wrote" in capsys.readouterr().out


def test_preview_usage_errors(tmp_path, capsys):
    assert main(["data", "preview", str(tmp_path / "missing"), "--out", str(tmp_path / "x.png")]) == 2
    assert "manifest.json" in capsys.readouterr().err
    d = write_records(tmp_path / "r", {"train": random_images(2, (8, 8, 1))})
    assert main(["data", "preview", str(d), "--split", "test", "--out", str(tmp_path / "x.png")]) == 2
    assert "available" in capsys.readouterr().err
    assert main(["data", "preview", str(d), "--augment", "wild"]) == 2
    assert main(["data"]) == 2


def test_subcommands_are_discovered():
    assert data_cli.SUBCOMMANDS[0] == "preview"
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    data_cli.register(sub)
    args = parser.parse_args(["data", "preview", "R"])
    assert args.split == "train" and callable(args.func) and np.isscalar(args.num)

"""tfrecord-convert / medtf convert: --help without TensorFlow, exit codes, summary, alias."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "records"))
import records_dicom_factory as fac  # noqa: E402

from medtf.cli import tfrecord_convert  # noqa: E402


@pytest.mark.parametrize("module,argv", [("medtf.cli.tfrecord_convert", ["--help"]),
                                         ("medtf.cli.main", ["--help"]),
                                         ("medtf.cli.main", ["convert", "--help"])])
def test_help_does_not_import_tensorflow(module, argv):
    code = (f"import sys\nfrom {module} import main\n"
            f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('tensorflow', 'pydicom', 'SimpleITK', 'keras') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert "HEAVY []" in out.stdout, out.stdout[-500:] + out.stderr[-2000:]
    assert "usage:" in out.stdout


def test_help_documents_exit_codes(capsys):
    with pytest.raises(SystemExit):
        tfrecord_convert.main(["--help"])
    text = capsys.readouterr().out
    for line in ("0  every input converted", "1  the run finished but some inputs were rejected", "2  usage error",
                 "3  failed"):
        assert line in text


def test_exit_codes_and_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MEDTF_PSEUDONYM_KEY", "00112233445566778899aabbccddeeff")
    for p in range(4):
        fac.write_single(tmp_path / "in" / f"a{p}.dcm", f"PID-{p}", seed=p)
    out = tmp_path / "out"
    assert tfrecord_convert.main([str(tmp_path / "in"), "-o", str(out), "--no-progress", "--split", "0.5,0.5"]) == 0
    text = capsys.readouterr().out
    assert "split" in text and "train" in text and "val" in text and "files: 4 (4 converted, 0 rejected)" in text
    # output already holds records → usage error
    assert tfrecord_convert.main([str(tmp_path / "in"), "-o", str(out), "--no-progress"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # some rejected → 1 (via the medtf convert alias, same function)
    (tmp_path / "in" / "junk.bin").write_bytes(b"\x00" * 10)
    from medtf.cli.main import main as medtf_main

    assert medtf_main(["convert", str(tmp_path / "in"), "-o", str(out), "--overwrite", "--no-progress"]) == 1
    assert "rejected" in capsys.readouterr().out
    # nothing converted → 3; bad option values → 2
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.txt").write_text("x")
    assert tfrecord_convert.main([str(tmp_path / "bad"), "-o", str(tmp_path / "o3"), "--no-progress"]) == 3
    assert tfrecord_convert.main([str(tmp_path / "in"), "-o", str(tmp_path / "o4"), "--window", "lungz"]) == 2
    assert "window must be a preset" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        tfrecord_convert.main([str(tmp_path / "in"), "-o", str(tmp_path / "o5"), "--size", "0,3"])
    assert exc.value.code == 2

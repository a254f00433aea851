"""The README's "one command per stage" path runs as written, in order, in an empty folder.

Each command of the README's bash block runs in a subprocess (the installed ``medtf`` / ``tfrecord-convert``
entry points) with the one placeholder the README names, ``scan.dcm``, replaced by a generated DICOM file.
Every command must exit 0, and the path must end in an int8 file that ``medtf edge predict`` runs.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def readme_path_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## The path, one command per stage"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


def test_readme_path_runs_as_written(tmp_path):
    commands = readme_path_commands()
    assert commands[0].startswith("medtf data phantoms") and commands[-1].startswith("medtf edge predict")
    # the config the README names, at the same relative path
    for cmd in commands:
        for word in shlex.split(cmd):
            if word.startswith("recipes/") and word.endswith(".yaml"):
                (tmp_path / word).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(REPO / word, tmp_path / word)
    env = dict(os.environ, PATH=f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
               TF_CPP_MIN_LOG_LEVEL="3")
    for i, cmd in enumerate(commands):
        if "scan.dcm" in cmd:
            scan = next(iter(sorted((tmp_path / "phantoms" / "dicom").rglob("*.dcm"))))
            shutil.copy(scan, tmp_path / "scan.dcm")
        proc = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"README command {i + 1} failed ({proc.returncode}): {cmd}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, cmd
        last = proc
    result = json.loads(last.stdout)
    assert len(result) == 1 and "error" not in result[0] and result[0]["label"] in ("normal", "opacity", "0", "1")
    report = json.loads((tmp_path / "runs" / "phantoms_cxr" / "eval-test" / "report.json").read_text())
    auc = report["metrics"]["auc"]
    assert (auc["value"] if isinstance(auc, dict) else auc) > 0.9  # "a model worth looking at"
    parity = json.loads((tmp_path / "runs" / "phantoms_cxr" / "export" / "parity.json").read_text())
    assert parity["passed"] and parity["raw"]["passed"]

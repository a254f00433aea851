"""Cached throw-away virtual environments for runtime tests (keyed by their requirement set)."""

from __future__ import annotations

import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]


def cached_venv(requirements: list[str], python: str | None = None) -> pathlib.Path:
    """A venv with exactly ``requirements`` installed (plus their dependencies), reused across runs.

    Skips the test when the venv cannot be built (no package index reachable).
    """
    key = hashlib.sha256(("\n".join(sorted(requirements)) + (python or sys.executable)).encode()).hexdigest()[:12]
    root = pathlib.Path(tempfile.gettempdir()) / f"medtf-test-venv-{key}"
    py = root / "bin" / "python"
    if (root / ".complete").is_file() and py.exists():
        return root
    subprocess.run([python or sys.executable, "-m", "venv", "--clear", str(root)], check=True)
    proc = subprocess.run([str(py), "-m", "pip", "install", "-q", *requirements], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"could not build a venv with {requirements}: {proc.stderr.strip().splitlines()[-1:]}")
    (root / ".complete").write_text("\n".join(requirements))
    return root


def run_in(venv: pathlib.Path, code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``code`` with the venv's python, medtf importable from the checkout (no install, no TF)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(REPO)
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"
    return subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=str(venv))

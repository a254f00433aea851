"""Where a records folder's raw sources live, remembered on this machine only.

Input folder names can identify patients, so they are not written into the manifest (unless
``tfrecord-convert --keep-paths``). The converter remembers them here instead —
``$MEDTF_HOME/inputs.json`` (default ``~/.local/share/medtf/inputs.json``), keyed by the records
folder's absolute path — so that ``medtf export``'s raw-input parity can find the sources on the machine
that converted them. Nothing here travels with the dataset or a model.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile


def registry_path() -> pathlib.Path:
    home = os.environ.get("MEDTF_HOME")
    base = pathlib.Path(home).expanduser() if home else pathlib.Path("~/.local/share/medtf").expanduser()
    return base / "inputs.json"


def _read() -> dict:
    try:
        data = json.loads(registry_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def remember_inputs(records_dir, roots) -> None:
    """Record the input folders of ``records_dir`` (best effort: a read-only home is not an error)."""
    path = registry_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.parent / ".inputs.lock", "a") as lock:  # concurrent converters: no lost update
            import fcntl

            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            data = _read()
            data[str(pathlib.Path(records_dir).resolve())] = [str(pathlib.Path(os.path.abspath(r))) for r in roots]
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".inputs.", suffix=".tmp")
            with os.fdopen(fd, "w") as fh:
                json.dump(data, fh, indent=1, sort_keys=True)
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
    except OSError:
        pass


def recall_inputs(records_dir) -> list[str] | None:
    """The input folders remembered for ``records_dir``, or None."""
    return _read().get(str(pathlib.Path(records_dir).resolve()))

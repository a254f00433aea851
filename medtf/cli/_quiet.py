"""Import TensorFlow without its start-up noise on the terminal.

TensorFlow 2.19+ logs through absl before any Python code can configure it: ``TF_CPP_MIN_LOG_LEVEL`` no
longer silences the oneDNN banner, the CPU-feature line, "Could not find cuda drivers" and, at the
first op, "failed call to cuInit" on CPU-only machines. ``import_tensorflow_quietly`` imports TensorFlow
(and initialises its devices) with file descriptor 2 sent through a pipe, then writes back every line
that is not such start-up noise — real warnings and errors still reach the user. Set
``TF_CPP_MIN_LOG_LEVEL=0`` (or 1) to see everything.
"""

from __future__ import annotations

import os
import re
import sys
import threading

#: start-up lines dropped (INFO lines always; the CUDA probe's errors only where no NVIDIA device exists)
NOISE = re.compile(
    r"All log messages before absl::InitializeLog|"
    r"^I\d{4} |"
    r"^\S* ?I external/|"
    r"^To enable the following instructions:|rebuild TensorFlow with the appropriate compiler flags|"
    r"failed call to cuInit|Could not find cuda drivers|Unable to register cu(FFT|DNN|BLAS) factory|"
    r"TF-TRT Warning|computation placer already registered"
)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow and run one op with start-up noise filtered from stderr (no-op when already
    imported, or when the user asked for TensorFlow's logs with ``TF_CPP_MIN_LOG_LEVEL`` 0 or 1)."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "") in ("0", "1"):
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # stderr replaced (e.g. captured): nothing to filter
        fd = None
    if fd != 2:
        import tensorflow as tf

        tf.constant(0.0) + 0.0
        return
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    saved = os.dup(2)
    chunks: list[bytes] = []

    def drain():
        while True:
            data = os.read(read_end, 65536)
            if not data:
                break
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    os.dup2(write_end, 2)
    os.close(write_end)
    try:
        import tensorflow as tf

        tf.constant(0.0) + 0.0  # device initialisation logs its probe errors at the first op
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        reader.join(timeout=10)
        os.close(read_end)
        text = b"".join(chunks).decode("utf-8", errors="replace")
        kept = [line for line in text.splitlines(keepends=True) if line.strip() and not NOISE.search(line)]
        if kept:
            sys.stderr.write("".join(kept))
            sys.stderr.flush()

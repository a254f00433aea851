"""Training callbacks: exact mid-epoch resume, best checkpoint and early stopping that survive resume.

``ResumeCheckpoint`` replaces ``keras.callbacks.BackupAndRestore``: Keras 3's callback saves mid-epoch
but restarts the interrupted epoch from its first batch on restore, which replays batches. Here the
backup records (epoch, batches done) and the trainer restarts the data stream exactly there, so a
killed and resumed run follows the same trajectory as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import pathlib

import keras

from medtf.training.run import atomic_write_text

STATE_FILE = "state.json"


def read_resume_state(backup_dir) -> dict | None:
    """The last backup's ``{"epoch", "batch", "weights", "global_step"}`` or None when there is none."""
    path = pathlib.Path(backup_dir) / STATE_FILE
    if not path.exists():
        return None
    state = json.loads(path.read_text())
    if not (pathlib.Path(backup_dir) / state["weights"]).exists():
        return None
    return state


class ResumeCheckpoint(keras.callbacks.Callback):
    """Back up weights + optimizer state every ``every_steps`` batches and at each epoch end.

    Args:
        backup_dir: folder for ``state.json`` and ``ckpt-<step>.weights.h5``.
        every_steps: batch interval (None: epoch ends only).
        start_batch: batches of the first epoch already done before this ``fit`` (resume offset).
        delete_on_end: remove the backup folder when ``fit`` ends normally and ``final`` is True.
    """

    def __init__(self, backup_dir, every_steps: int | None = None, start_batch: int = 0):
        super().__init__()
        self.dir = pathlib.Path(backup_dir)
        self.every = int(every_steps) if every_steps else None
        self.start_batch = int(start_batch)
        self._epoch = 0
        self._offset = self.start_batch
        self._first_epoch = True

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._offset = self.start_batch if self._first_epoch else 0
        self._first_epoch = False

    def on_train_batch_end(self, batch, logs=None):
        done = self._offset + batch + 1
        if self.every and done % self.every == 0:
            self.save(self._epoch, done)

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch + 1, 0)

    def save(self, epoch: int, batch: int) -> None:
        """Write a backup for "``batch`` batches of ``epoch`` done" atomically, then drop older ones."""
        self.dir.mkdir(parents=True, exist_ok=True)
        step = int(self.model.optimizer.iterations.numpy())
        name = f"ckpt-{step:09d}-e{epoch}-b{batch}.weights.h5"
        self.model.save_weights(str(self.dir / name), overwrite=True)
        state = {"epoch": epoch, "batch": batch, "weights": name, "global_step": step}
        atomic_write_text(self.dir / STATE_FILE, json.dumps(state))
        for old in self.dir.glob("ckpt-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


def restore_backup(model, backup_dir) -> dict | None:
    """Load the last backup into ``model`` (weights and optimizer). Returns its state or None."""
    state = read_resume_state(backup_dir)
    if state is None:
        return None
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(str(pathlib.Path(backup_dir) / state["weights"]))
    return state


def read_history(path) -> list[dict]:
    """Rows of a CSVLogger file as dicts of floats (``epoch`` as int); [] when absent."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as f:
        rows = []
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                try:
                    row[k] = float(v)
                except (TypeError, ValueError):
                    row[k] = v
            row["epoch"] = int(row["epoch"])
            rows.append(row)
    return rows


def truncate_history(path, epochs_done: int) -> None:
    """Drop history rows for epochs ≥ ``epochs_done`` (they will be re-run after a resume)."""
    path = pathlib.Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    if not lines:
        return
    header, rows = lines[0], lines[1:]
    kept = [r for r in rows if r.strip() and int(float(r.split(",", 1)[0])) < epochs_done]
    atomic_write_text(path, header + "".join(kept))


def best_so_far(history: list[dict], monitor: str, mode: str):
    """(best value, epochs since the best) of ``monitor`` in history rows, or (None, 0)."""
    vals = [r[monitor] for r in history if isinstance(r.get(monitor), float) and not math.isnan(r[monitor])]
    if not vals:
        return None, 0
    pick = min if mode == "min" else max
    best = pick(vals)
    last_best = max(i for i, v in enumerate(vals) if v == best)
    return best, len(vals) - 1 - last_best


def uses_ema(model) -> bool:
    opt = getattr(model, "optimizer", None)
    return bool(getattr(opt, "use_ema", False)) and hasattr(opt, "_model_variables_moving_average")


def defer_ema_finalize(model) -> bool:
    """Stop ``fit()`` from copying the EMA weights into the model when it returns.

    Keras does that at the end of every ``fit`` call; a resumed run calls ``fit`` twice (the rest of the
    interrupted epoch, then the remaining epochs), which would restart training from the averages. The
    averages are used where they matter instead: validation (``SwapEMAWeights``), the best checkpoint and
    the final save (``ema_weights``). Returns whether the model's optimizer keeps an EMA.
    """
    opt = getattr(model, "optimizer", None)
    if not getattr(opt, "use_ema", False):
        return False
    opt.finalize_variable_values = lambda variables: None
    return True


@contextlib.contextmanager
def ema_weights(model):
    """Inside the block the model holds the optimizer's moving-average weights (``use_ema``); they are
    swapped back on exit. A no-op for optimizers without EMA."""
    if not uses_ema(model):
        yield
        return
    opt = model.optimizer
    pairs = list(zip(opt._trainable_variables, opt._model_variables_moving_average))

    def swap():
        for var, avg in pairs:
            raw = keras.ops.convert_to_numpy(var)
            var.assign(avg)
            avg.assign(raw)

    swap()
    try:
        yield
    finally:
        swap()


class ResumableModelCheckpoint(keras.callbacks.ModelCheckpoint):
    """Best-model checkpoint whose "best so far" is seeded from ``history.csv`` at each ``fit`` start.
    With an EMA optimizer it saves the averaged weights (the ones validation scored)."""

    def __init__(self, filepath, history_path, mode_name: str, **kw):
        super().__init__(filepath, save_best_only=True, mode=mode_name, **kw)
        self.history_path = history_path
        self.mode_name = mode_name

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        best, _ = best_so_far(read_history(self.history_path), self.monitor, self.mode_name)
        if best is not None and os.path.exists(self.filepath):
            self.best = best

    def on_epoch_end(self, epoch, logs=None):
        with ema_weights(self.model):
            super().on_epoch_end(epoch, logs)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """Early stopping whose best value and wait counter are seeded from ``history.csv``."""

    def __init__(self, history_path, mode_name: str, **kw):
        super().__init__(mode=mode_name, **kw)
        self.history_path = history_path
        self.mode_name = mode_name

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        best, wait = best_so_far(read_history(self.history_path), self.monitor, self.mode_name)
        if best is not None:
            self.best = best
            self.wait = wait


class InterruptAfterBatches(keras.callbacks.Callback):
    """Test hook: ``os._exit(137)`` (as if SIGKILLed) after ``n`` training batches of this process."""

    def __init__(self, n: int):
        super().__init__()
        self.n = int(n)
        self.seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen >= self.n:
            os._exit(137)

"""Learning-rate schedules: linear warmup + cosine decay (``keras.optimizers.schedules.CosineDecay``)."""

from __future__ import annotations

import math


def make_schedule(cfg, learning_rate: float, *, steps_per_epoch: int, epochs: int):
    """Build the learning rate (float or schedule) for an optimizer.

    Args:
        cfg: ``ScheduleConfig`` (name "cosine" | "constant", warmup_epochs / warmup_steps, alpha,
            initial_fraction).
        learning_rate: the peak learning rate.
        steps_per_epoch: optimizer steps per epoch.
        epochs: number of epochs.

    Returns:
        ``learning_rate`` itself (constant, no warmup) or a ``CosineDecay`` schedule: linear warmup from
        ``initial_fraction·lr`` to ``lr`` over the warmup steps, then cosine decay to ``alpha·lr`` at the
        last step (for "constant" the decay is flat: ``alpha = 1``).

    A warmup as long as training is shortened to ``total − 1`` steps (with a warning).
    """
    import keras

    total = max(1, int(steps_per_epoch) * int(epochs))
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(math.ceil(cfg.warmup_epochs * steps_per_epoch))
    warmup = int(warmup)
    if warmup >= total and warmup > 0:
        import warnings

        warnings.warn(f"schedule warmup ({warmup} steps) is not shorter than training ({total} steps); "
                      f"using {total - 1} warmup steps", RuntimeWarning, stacklevel=2)
        warmup = total - 1
    alpha = 1.0 if cfg.name == "constant" else float(cfg.alpha)
    if cfg.name == "constant" and warmup == 0:
        return float(learning_rate)
    if warmup > 0:
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=float(learning_rate) * float(cfg.initial_fraction),
            decay_steps=total - warmup,
            alpha=alpha,
            warmup_target=float(learning_rate),
            warmup_steps=warmup,
        )
    return keras.optimizers.schedules.CosineDecay(float(learning_rate), decay_steps=total, alpha=alpha)


def make_optimizer(cfg, learning_rate):
    """AdamW / Adam / SGD from an ``OptimizerConfig`` with the given learning rate (float or schedule)."""
    import keras

    clip = {}
    if cfg.global_clipnorm is not None:
        clip["global_clipnorm"] = float(cfg.global_clipnorm)
    elif cfg.clipnorm is not None:
        clip["clipnorm"] = float(cfg.clipnorm)
    if getattr(cfg, "ema_momentum", None):
        clip.update(use_ema=True, ema_momentum=float(cfg.ema_momentum))
    if cfg.name == "adamw":
        return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=float(cfg.weight_decay),
                                      beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon, **clip)
    if cfg.name == "adam":
        return keras.optimizers.Adam(learning_rate=learning_rate, beta_1=cfg.beta_1, beta_2=cfg.beta_2,
                                     epsilon=cfg.epsilon, **clip)
    return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9, weight_decay=float(cfg.weight_decay) or None,
                                **clip)

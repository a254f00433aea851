"""Small validation helpers shared by the builders (internal)."""

from __future__ import annotations

from typing import Sequence


def check_input_shape(input_shape, *, spatial_dims: int | Sequence[int] | None = None,
                      arg: str = "input_shape") -> tuple:
    """Validate ``input_shape`` = ``(*spatial, channels)`` and return it as a tuple.

    Spatial sizes may be ``None`` (variable size); channels must be a positive int.

    Args:
        input_shape: the shape without the batch axis.
        spatial_dims: required number of spatial axes (or allowed numbers); ``None`` accepts 1–3.
        arg: argument name used in error messages.

    Returns:
        The shape as a tuple.

    Raises:
        ValueError: wrong rank, non-positive sizes or missing channel count.
    """
    try:
        shape = tuple(None if s is None else int(s) for s in input_shape)
    except TypeError:
        raise ValueError(f"{arg}: expected a sequence (*spatial, channels), got {input_shape!r}") from None
    allowed = (1, 2, 3) if spatial_dims is None else (
        (spatial_dims,) if isinstance(spatial_dims, int) else tuple(spatial_dims))
    if len(shape) - 1 not in allowed:
        want = " or ".join(f"{d + 1} (= {d} spatial + channels)" for d in allowed)
        raise ValueError(f"{arg}: expected {want} entries, got {len(shape)}: {shape}")
    if shape[-1] is None or shape[-1] < 1:
        raise ValueError(f"{arg}: channels (last entry) must be a positive int, got {shape[-1]!r} in {shape}")
    for s in shape[:-1]:
        if s is not None and s < 1:
            raise ValueError(f"{arg}: spatial sizes must be positive or None, got {shape}")
    return shape


def check_divisible(shape: tuple, factor: int, *, what: str, arg: str = "input_shape") -> None:
    """Raise if a known spatial size is not divisible by ``factor`` (``what`` explains why)."""
    for s in shape[:-1]:
        if s is not None and s % factor:
            raise ValueError(f"{arg}: spatial sizes must be divisible by {factor} for {what}, got {shape}")


def set_batchnorm_momentum(model, momentum: float) -> None:
    """Set the moving-average momentum of every BatchNormalization layer of ``model`` (nested models
    included). Keras reads it at call time and saves it in ``get_config()``."""
    import keras

    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)

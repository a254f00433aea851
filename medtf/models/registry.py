"""Name → builder registry used by recipes and the CLI.

Importing this module is cheap (no TensorFlow/Keras): the built-in builders live in their own modules and
are imported the first time their name is looked up.

Example::

    from medtf import models
    model = models.build("simple_cnn", input_shape=(64, 64, 1), num_classes=2, task="multiclass")
"""

from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["register", "get_builder", "build", "available"]

# Built-in names and the module whose import registers them (kept in sync by tests/models/test_registry.py).
_BUILTIN_MODULES: dict[str, str] = {
    "efficientnet": "medtf.models._efficientnet",
    "densenet3d_cbam": "medtf.models._densenet3d",
    "xception_multiscale": "medtf.models._xception",
    "unet": "medtf.models._unet",
    "resnet3d": "medtf.models._resnet3d",
    "attention_mil": "medtf.models._mil",
    "restoration_unet": "medtf.models._restoration",
    "simple_cnn": "medtf.models._simple",
}

_REGISTRY: dict[str, Callable] = {}


def register(name: str) -> Callable[[Callable], Callable]:
    """Decorator registering a model builder under ``name``.

    Args:
        name: registry key (lower-case, e.g. ``"unet"``).

    Returns:
        The decorator; it returns the builder unchanged.

    Raises:
        ValueError: if ``name`` is empty or already registered to a different function.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"register(name): expected a non-empty string, got {name!r}")

    def decorator(fn: Callable) -> Callable:
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not fn and (
            existing.__module__ != fn.__module__ or existing.__qualname__ != fn.__qualname__
        ):
            raise ValueError(
                f"model name {name!r} is already registered to {existing.__module__}.{existing.__qualname__}; "
                f"cannot register {fn.__module__}.{fn.__qualname__}"
            )
        _REGISTRY[name] = fn
        return fn

    return decorator


def available() -> list[str]:
    """Sorted names of all known builders (built-in and user-registered).

    Returns:
        List of names accepted by :func:`build` / :func:`get_builder`.
    """
    return sorted(set(_BUILTIN_MODULES) | set(_REGISTRY))


def get_builder(name: str) -> Callable:
    """The builder function registered as ``name``.

    Args:
        name: one of :func:`available`.

    Returns:
        The builder callable (``builder(**kwargs) -> keras.Model``).

    Raises:
        KeyError: unknown name (the message lists the known ones).
    """
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; expected one of {available()}") from None


def build(name: str, **kwargs):
    """Build the model registered as ``name``.

    Args:
        name: one of :func:`available`.
        **kwargs: builder arguments (e.g. ``input_shape``, ``num_classes``, ``task``).

    Returns:
        A functional ``keras.Model``.

    Raises:
        KeyError: unknown name.
        ValueError: invalid builder arguments (raised by the builder).
    """
    return get_builder(name)(**kwargs)

"""Window presets (width, level in HU) and the one parser of ``"lung"`` / ``"WIDTH,LEVEL"``."""

from __future__ import annotations

#: Window presets (width, level) in HU.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (1500.0, -600.0),
    "mediastinum": (350.0, 50.0),
    "abdomen": (400.0, 40.0),
    "brain": (80.0, 40.0),
    "bone": (1800.0, 400.0),
}


def parse_window(value) -> tuple[float, float]:
    """A preset name, ``"WIDTH,LEVEL"`` or a (width, level) pair → (width, level) floats.

    Raises:
        ValueError: unknown preset, malformed text, or width < 1.
    """
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in WINDOW_PRESETS:
            return WINDOW_PRESETS[text.lower()]
        try:
            w, l = (float(v) for v in text.split(","))
        except ValueError:
            raise ValueError(
                f"window must be a preset {sorted(WINDOW_PRESETS)} or 'WIDTH,LEVEL'. Received: {value!r}"
            ) from None
    else:
        try:
            w, l = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ValueError(f"window must be (width, level). Received: {value!r}") from None
    if not w >= 1:
        raise ValueError(f"window width must be >= 1. Received: {w}")
    return w, l


def parse_windows(values) -> tuple[tuple[float, float], ...]:
    """Several windows; a string may comma-join preset names (``"lung,mediastinum"``)."""
    out: list[tuple[float, float]] = []
    for v in values:
        if isinstance(v, str) and "," in v and all(p.strip().lower() in WINDOW_PRESETS for p in v.split(",")):
            out.extend(WINDOW_PRESETS[p.strip().lower()] for p in v.split(","))
        else:
            out.append(parse_window(v))
    return tuple(out)

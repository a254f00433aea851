"""Standard configurations of every builder and their parameter counts (source of docs/models.md's table).

``python -m medtf.models.summary`` prints the Markdown table (builds each model once: ~1 min on a CPU).
"""

from __future__ import annotations

import argparse

__all__ = ["STANDARD_CONFIGS", "parameter_counts", "markdown_table"]

# label → (registry name, kwargs); input sizes are the recipes' ones (also used by benchmarks/models.py)
STANDARD_CONFIGS: dict[str, tuple[str, dict]] = {
    "efficientnet b0 (ImageNet head)": ("efficientnet", dict(variant="b0", input_shape=(224, 224, 3), num_classes=1000)),
    "efficientnet b0 (chest X-ray, binary)": ("efficientnet", dict(variant="b0", input_shape=(224, 224, 1),
                                                                  num_classes=2, task="binary")),
    "efficientnet v2s (binary)": ("efficientnet", dict(variant="v2s", input_shape=(384, 384, 1), num_classes=2,
                                                      task="binary")),
    "densenet3d_cbam 121, k=32 (nodule, binary)": ("densenet3d_cbam", dict(input_shape=(64, 64, 64, 1),
                                                                           num_classes=2, task="binary")),
    "densenet3d 121, k=32, no CBAM": ("densenet3d_cbam", dict(input_shape=(64, 64, 64, 1), num_classes=2,
                                                             task="binary", cbam=None)),
    "xception_multiscale (1.0, 0.5) (DR, 5 grades ordinal)": ("xception_multiscale", dict(
        input_shape=(224, 224, 3), num_classes=5, task="ordinal")),
    "xception_multiscale shared weights": ("xception_multiscale", dict(input_shape=(224, 224, 3), num_classes=5,
                                                                      task="ordinal", shared_weights=True)),
    "unet 2D depth 4, 32 filters, 2 classes": ("unet", dict(spatial_dims=2, input_shape=(256, 256, 1),
                                                            num_classes=2)),
    "unet 2D + attention gates + residual": ("unet", dict(spatial_dims=2, input_shape=(256, 256, 1), num_classes=2,
                                                          attention_gates=True, residual=True)),
    "unet 3D depth 4, 32 filters, 2 classes": ("unet", dict(spatial_dims=3, input_shape=(64, 64, 64, 1),
                                                            num_classes=2)),
    "unet 3D + attention gates + deep supervision": ("unet", dict(spatial_dims=3, input_shape=(64, 64, 64, 1),
                                                                  num_classes=2, attention_gates=True,
                                                                  deep_supervision=True)),
    "resnet3d 18": ("resnet3d", dict(input_shape=(64, 64, 64, 1), num_classes=2, task="binary", depth=18)),
    "resnet3d 34": ("resnet3d", dict(input_shape=(64, 64, 64, 1), num_classes=2, task="binary", depth=34)),
    "resnet3d 50": ("resnet3d", dict(input_shape=(64, 64, 64, 1), num_classes=2, task="binary", depth=50)),
    "attention_mil (1024-d tile embeddings)": ("attention_mil", dict(input_shape=(None, 1024), num_classes=2)),
    "restoration_unet 2D (denoise)": ("restoration_unet", dict(spatial_dims=2, input_shape=(256, 256, 1))),
    "restoration_unet 3D (x2 super-resolution)": ("restoration_unet", dict(spatial_dims=3,
                                                                           input_shape=(32, 32, 32, 1), scale=2)),
    "simple_cnn 2D": ("simple_cnn", dict(input_shape=(64, 64, 1), num_classes=2, task="binary")),
}


def parameter_counts(labels=None) -> list[dict]:
    """Build each standard configuration and count its parameters.

    Args:
        labels: subset of :data:`STANDARD_CONFIGS` keys (default all).

    Returns:
        Rows ``{"label", "builder", "input_shape", "params", "trainable"}``.
    """
    import keras

    from medtf.models.registry import build

    rows = []
    for label in labels or STANDARD_CONFIGS:
        name, kwargs = STANDARD_CONFIGS[label]
        model = build(name, **kwargs)
        trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
        rows.append(dict(label=label, builder=name, input_shape=list(model.input_shape[1:]) if not isinstance(
            model.input_shape, list) else [list(s[1:]) for s in model.input_shape], params=model.count_params(),
            trainable=trainable))
        keras.backend.clear_session()
    return rows


def markdown_table(rows: list[dict]) -> str:
    """Rows of :func:`parameter_counts` as a Markdown table."""
    lines = ["| configuration | builder | input | parameters | trainable |", "|---|---|---|---:|---:|"]
    for r in rows:
        shape = "×".join("?" if s is None else str(s) for s in r["input_shape"])
        lines.append(f"| {r['label']} | `{r['builder']}` | {shape} | {r['params']:,} | {r['trainable']:,} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    print(markdown_table(parameter_counts()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

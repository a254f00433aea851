"""medtf: a Keras 3 / TensorFlow 2 toolkit for medical imaging.

DICOM / NIfTI / PNG / npz ──► records ──► tf.data ──► Keras model ──► SavedModel / LiteRT / edge.

Importing ``medtf`` is cheap: subpackages (and TensorFlow) load on first use.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "preprocess", "interpret", "io", "records", "data", "layers", "models", "training", "evaluation", "export"]


def __getattr__(name):  # lazy subpackages: `import medtf; medtf.models` works without importing TF up front
    if name in __all__ and name != "__version__":
        import importlib

        return importlib.import_module(f"medtf.{name}")
    raise AttributeError(f"module 'medtf' has no attribute {name!r}")

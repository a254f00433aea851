"""Command-line entry points. Each command module registers itself; nothing here imports TensorFlow."""

"""③ tf.data pipelines. ``medtf.data.spec`` is importable without TensorFlow (edge runtime)."""

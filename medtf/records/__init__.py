"""② TFRecord shards + manifest: the one versioned schema, encoder, writer, splits and the converter."""

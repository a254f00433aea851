"""Optional Apache Beam pipeline around the same pure unit function (``pip install medtf[beam]``).

The local converter and this pipeline share :func:`medtf.records.convert.convert_unit`, so records are
identical. This pipeline writes one split-agnostic set of shards (``records-*.tfrecord``); run the split
assignment and manifest over its side output of example metadata, or use it for scale-out of the
expensive decode while the local converter remains the reference. Untested when Beam is not installed.
"""

from __future__ import annotations


def build_pipeline(pipeline, units, config, key_file: str, output_prefix: str):
    """Add "units → examples → TFRecord shards" to ``pipeline``.

    Args:
        pipeline: an ``apache_beam.Pipeline``.
        units: ``medtf.io.SourceUnit`` list from ``medtf.io.discover``.
        config: :class:`medtf.records.convert.ConvertConfig` (processing and read options).
        key_file: pseudonym key file readable by the workers (the secret is never pickled).
        output_prefix: shard path prefix.

    Returns:
        The PCollection of (key, patient, label, split) metadata tuples.
    """
    from medtf._optional import require

    beam = require("apache_beam")

    class _Convert(beam.DoFn):
        def setup(self):
            from medtf.io import Pseudonymizer

            self.pseudonymizer = Pseudonymizer.from_key_file(key_file)

        def process(self, unit):
            from medtf.io import ReadError
            from medtf.records.convert import convert_unit
            from medtf.records.process import ProcessError

            try:
                for ex in convert_unit(unit, config, self.pseudonymizer):
                    yield beam.pvalue.TaggedOutput("meta", (ex.key, ex.patient, ex.label, ex.split))
                    yield ex.payload
            except (ReadError, ProcessError) as exc:
                yield beam.pvalue.TaggedOutput("rejected", (unit.key, str(exc)))

    results = (
        pipeline
        | "units" >> beam.Create(list(units))
        | "convert" >> beam.ParDo(_Convert()).with_outputs("meta", "rejected", main="payload")
    )
    _ = results.payload | "write" >> beam.io.WriteToTFRecord(output_prefix, file_name_suffix=".tfrecord")
    return results.meta

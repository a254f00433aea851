"""The converter on Apache Beam (``tfrecord-convert --runner beam``; ``pip install medtf[beam]``).

The same steps as the local converter (:func:`medtf.records.convert.convert`), the same functions:

1. The launching process runs :func:`~medtf.records.convert.plan_conversion` — discovery, series
   pairing, the labels CSV, ``--resume`` set-up — and writes the unit list in chunks to
   ``OUTPUT/.work/beam/`` (only the chunk paths travel in the job graph).
2. Beam workers run :func:`~medtf.records.convert.convert_to_cache` on each unit: the pure
   "one source → examples" function, writing framed records to a journal in ``OUTPUT/.work``. Every
   per-source failure becomes a rejection with its reason, never a failed job.
3. One step takes every unit's metadata and runs :func:`~medtf.records.convert.decide_dataset`
   (spatial dims, channels, storage dtype); the units to re-encode with the dataset's dtype go back to
   the workers; then :func:`~medtf.records.convert.layout_dataset` assigns patient-grouped splits and
   plans the shards and the manifest.
4. Workers write the shards (:func:`~medtf.records.convert.write_planned_shard`, atomic); the last step
   removes stale shards and writes ``manifest.json``.

Output folder, inputs and key file must be paths every worker can read (a shared filesystem: NFS, a
cluster volume, a cloud bucket mounted with FUSE). The pseudonym secret reaches the workers only as that
key-file path: each worker reads the file in ``DoFn.setup``; the pipeline never holds the secret (a
``Pseudonymizer`` refuses to be pickled). Re-running the job with ``--resume`` re-uses every unit the
journals hold and skips every shard already written (its digest marker in ``OUTPUT/.work/shards``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import pickle
import shutil
import time
from typing import Sequence

from medtf._optional import require
from medtf.records.convert import (
    STORAGE_DTYPES,
    WORK,
    ConversionPlan,
    ConvertConfig,
    ConvertError,
    ConvertResult,
    Journal,
    accept_reencoded,
    convert_to_cache,
    decide_dataset,
    exit_code,
    finish_dataset,
    layout_dataset,
    load_journals,
    plan_conversion,
    resume_lookup,
    write_planned_shard,
    write_stats,
)

BEAM_DIR = "beam"
CHUNK_UNITS = 256  # units per chunk file: the unit list never travels in the job graph


def parse_beam_options(values: Sequence[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` (``--beam-option``) → {key: value}; a leading ``--`` on KEY is accepted.

    Raises:
        ConvertError: an item without ``=`` or with an empty key.
    """
    out: dict[str, str] = {}
    for item in values:
        key, sep, value = str(item).partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConvertError(f"--beam-option must be KEY=VALUE (e.g. runner=FlinkRunner). Received: {item!r}")
        out[key] = value
    return out


def pipeline_flags(config: ConvertConfig, beam_options: dict[str, str]) -> list[str]:
    """Beam command-line flags: the DirectRunner in multi-process mode with ``config.workers`` processes and
    worker logs from ERROR up, overridden and extended by ``beam_options`` (e.g. ``runner=DataflowRunner``)."""
    opts = {"runner": "DirectRunner", "direct_running_mode": "multi_processing",
            "direct_num_workers": str(config.workers), "default_sdk_harness_log_level": "ERROR"}
    opts.update(beam_options)
    return [f"--{k}={v}" for k, v in opts.items()]


def worker_key_file(config: ConvertConfig) -> str:
    """The pseudonym key as a file path the workers read: ``--key-file``, else ``$MEDTF_PSEUDONYM_KEY_FILE``,
    else ``~/.config/medtf/pseudonym.key`` (created 0600 on first use).

    Raises:
        ConvertError: only ``$MEDTF_PSEUDONYM_KEY`` holds the secret (it would have to travel inside the
            job), or the key file is unusable.
    """
    from medtf.io import Pseudonymizer
    from medtf.io.deid import DEFAULT_KEY_FILE, ENV_KEY, ENV_KEY_FILE

    path = config.key_file
    if not path:
        if os.environ.get(ENV_KEY):
            raise ConvertError(
                f"--runner beam: the pseudonym secret is in ${ENV_KEY}, which would have to travel inside the "
                "job; put it in a file every worker can read and pass --key-file PATH (or set "
                f"${ENV_KEY_FILE})")
        path = os.environ.get(ENV_KEY_FILE) or str(DEFAULT_KEY_FILE)
    path = str(pathlib.Path(path).expanduser().resolve())
    try:
        Pseudonymizer.from_key_file(path, create=not config.key_file)
    except (FileNotFoundError, ValueError) as exc:
        raise ConvertError(f"--key-file: {exc}") from None
    return path


# ------------------------------------------------------------------------------------ pipeline steps


def _load(path: str):
    with open(path, "rb") as f:
        return pickle.load(f)


def _read_chunk(path: str):
    """A chunk file → its ``(UnitTask, {dtype: resumed meta})`` elements."""
    yield from _load(path)


def _decide(pairs, plan_path: str) -> dict:
    """All first-pass metas → the dataset facts (which units to re-encode, in which dtype)."""
    plan: ConversionPlan = _load(plan_path)
    metas = dict(pairs)
    reject = dict(plan.unit_reject)
    facts = decide_dataset(plan.config.mode, metas, reject)
    return {"metas": metas, "reject": reject, "facts": facts}


def _redo_set(decided: dict) -> tuple[str, frozenset]:
    return decided["facts"].image_dtype, frozenset(decided["facts"].redo)


def _redo_elements(element, redo: tuple[str, frozenset]):
    task, prior = element
    image_dtype, keys = redo
    if task.unit.key in keys:
        yield task, image_dtype, prior


def _layout(decided: dict, plan_path: str, redone) -> object:
    """Re-encoded metas in, then splits, shard plan and manifest (the local converter's functions)."""
    plan: ConversionPlan = _load(plan_path)
    metas, reject, facts = decided["metas"], decided["reject"], decided["facts"]
    if facts.redo:
        accept_reencoded(facts, metas, reject, dict(redone))
    return layout_dataset(plan, metas, reject, facts)


def _finish(layout, plan_path: str, written) -> str:
    """After every shard is written (``written`` is a side input): stale shards out, manifest last."""
    plan: ConversionPlan = _load(plan_path)
    missing = {s.name for s in layout.shards} - set(written)
    if missing:  # pragma: no cover - a runner that lost a shard write without failing the job
        raise RuntimeError(f"{len(missing)} shard(s) were not written")
    finish_dataset(plan, layout)
    return plan.out


def build_pipeline(pipeline, chunk_paths: Sequence[str], plan_path: str, plan: ConversionPlan, key_file: str):
    """Add the conversion to ``pipeline`` (an ``apache_beam.Pipeline``).

    Args:
        pipeline: the pipeline to extend.
        chunk_paths: files holding the pickled unit elements (written by :func:`convert_beam`).
        plan_path: file holding the pickled :class:`~medtf.records.convert.ConversionPlan` (no units).
        plan: the same plan (its config, work folder and fingerprint go into the workers' ``DoFn``).
        key_file: pseudonym key file path read by every worker (the secret is never in the pipeline).

    Returns:
        The PCollection holding the output folder once ``manifest.json`` is written.
    """
    beam = require("apache_beam")

    class ConvertUnits(beam.DoFn):
        """(task, dtype, resumed metas) → (unit key, meta); the unit's records go to this DoFn's journal."""

        def __init__(self, config, work, fingerprint, key_path):
            self.config, self.work, self.fingerprint, self.key_path = config, work, fingerprint, key_path

        def setup(self):
            from medtf.io import Pseudonymizer

            self.pseudonymizer = Pseudonymizer.from_key_file(self.key_path)
            self.journal = None

        def process(self, element):
            task, dtype, prior = element
            meta = prior.get(dtype)
            if meta is None:
                if self.journal is None:
                    self.journal = Journal(self.work)
                meta = convert_to_cache(task, dtype, self.config, self.pseudonymizer, self.work, self.fingerprint,
                                        journal=self.journal)
            yield task.unit.key, meta

        def finish_bundle(self):  # the bundle's records are durable before its metas are committed
            if getattr(self, "journal", None) is not None:
                self.journal.close(sync=True)
                self.journal = None

        def teardown(self):
            self.finish_bundle()

    class WriteShard(beam.DoFn):
        def __init__(self, out, work):
            self.out, self.work = out, work

        def process(self, spec):
            yield write_planned_shard(self.out, self.work, spec)

    convert = ConvertUnits(plan.config, plan.work, plan.fingerprint, key_file)
    tasks = (pipeline
             | "unit chunks" >> beam.Create(list(chunk_paths))
             | "spread chunks" >> beam.Reshuffle()
             | "read chunks" >> beam.FlatMap(_read_chunk)
             | "spread units" >> beam.Reshuffle())
    first = (tasks
             | "natural dtype" >> beam.Map(lambda e: (e[0], None, e[1]))
             | "convert" >> beam.ParDo(convert)
             | "collect metas" >> beam.combiners.ToList())
    decided = first | "decide dataset" >> beam.Map(_decide, plan_path)
    redo = decided | "re-encode set" >> beam.Map(_redo_set)
    redone = (tasks
              | "units to re-encode" >> beam.FlatMap(_redo_elements, redo=beam.pvalue.AsSingleton(redo))
              | "spread re-encode" >> beam.Reshuffle()
              | "re-encode" >> beam.ParDo(convert)
              | "collect re-encoded" >> beam.combiners.ToList())
    layout = decided | "splits and shard plan" >> beam.Map(_layout, plan_path, redone=beam.pvalue.AsSingleton(redone))
    written = (layout
               | "shards" >> beam.FlatMap(lambda lay: lay.shards)
               | "spread shards" >> beam.Reshuffle()
               | "write shards" >> beam.ParDo(WriteShard(plan.out, plan.work))
               | "collect shards" >> beam.combiners.ToList())
    return layout | "manifest" >> beam.Map(_finish, plan_path, written=beam.pvalue.AsSingleton(written))


def prepare_job(config: ConvertConfig, beam_options: dict[str, str] | Sequence[str] = ()):
    """Plan the conversion and stage its unit list for the workers; returns (pipeline, plan, key_file).

    The returned ``apache_beam.Pipeline`` is built but not run (:func:`convert_beam` runs it).

    Raises:
        ConvertError: bad options, inputs, key file or output folder (exit code 2).
        ImportError: Apache Beam is not installed (``pip install medtf[beam]``).
    """
    beam = require("apache_beam")
    from apache_beam.options.pipeline_options import PipelineOptions

    if not isinstance(beam_options, dict):
        beam_options = parse_beam_options(beam_options)
    flags = pipeline_flags(config, beam_options)
    key_file = worker_key_file(config)
    config = dataclasses.replace(config, key_file=key_file, progress=False)
    plan, pseudonymizer = plan_conversion(config)
    del pseudonymizer  # discovery's series tokens and the fingerprint needed it; the workers read the file
    done = load_journals(plan.work) if config.resume else {}
    stage = pathlib.Path(plan.work) / BEAM_DIR
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    elements = []
    for task in plan.tasks:
        prior = {}
        for dtype in (None,) + STORAGE_DTYPES:
            meta = resume_lookup(done, task.unit.key, plan.fingerprint, dtype, task.paths)
            if meta is not None:
                prior[dtype] = meta
        elements.append((task, prior))
    chunk_paths = []
    for i in range(0, len(elements), CHUNK_UNITS):
        path = stage / f"units-{i // CHUNK_UNITS:06d}.pkl"
        path.write_bytes(pickle.dumps(elements[i:i + CHUNK_UNITS], protocol=pickle.HIGHEST_PROTOCOL))
        chunk_paths.append(str(path))
    plan_path = stage / "plan.pkl"
    plan_path.write_bytes(pickle.dumps(dataclasses.replace(plan, tasks=[]), protocol=pickle.HIGHEST_PROTOCOL))
    pipeline = beam.Pipeline(options=PipelineOptions(flags))
    build_pipeline(pipeline, chunk_paths, str(plan_path), plan, key_file)
    return pipeline, plan, key_file


def convert_beam(config: ConvertConfig, beam_options: dict[str, str] | Sequence[str] = ()) -> ConvertResult:
    """Run the conversion as an Apache Beam job and wait for it; the output equals :func:`convert`'s.

    Args:
        config: the conversion options (``workers`` = DirectRunner processes unless ``beam_options`` say
            otherwise; ``progress`` is ignored: the runner reports progress).
        beam_options: Beam pipeline options as {key: value} or ``["KEY=VALUE", ...]``, e.g.
            ``runner=FlinkRunner``, ``flink_master=host:8081``, ``environment_type=LOOPBACK``.

    Returns:
        :class:`~medtf.records.convert.ConvertResult` (exit code 0 / 1 / 3 as the local converter).

    Raises:
        ConvertError: bad options, inputs, key file or output folder (exit code 2).
        ImportError: Apache Beam is not installed.
        Exception: the job itself failed (a worker died repeatedly, the runner was unreachable, ...).
    """
    t0 = time.perf_counter()
    pipeline, plan, _ = prepare_job(config, beam_options)
    prepare_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    result = pipeline.run()
    state = result.wait_until_finish()
    if str(state).split(".")[-1] not in ("DONE", "UNKNOWN"):
        raise RuntimeError(f"Beam job ended in state {state}")
    manifest_path = pathlib.Path(plan.out) / "manifest.json"
    if not manifest_path.exists():
        raise RuntimeError("the Beam job finished without writing manifest.json")
    manifest = json.loads(manifest_path.read_text())
    timings = {"discover_s": plan.discover_s, "prepare_s": prepare_s, "pipeline_s": time.perf_counter() - t1,
               "total_s": time.perf_counter() - t0}
    stats = write_stats(plan, manifest["counts"]["examples"], timings, runner="beam")
    if not config.keep_work:
        shutil.rmtree(pathlib.Path(plan.out) / WORK, ignore_errors=True)
    from medtf.records.convert import LOCK, release_lock

    release_lock(str(pathlib.Path(plan.out) / LOCK))
    return ConvertResult(exit_code(manifest), manifest, plan.out, stats)

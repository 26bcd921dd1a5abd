r"""Throughput of a config's model: train and eval steps, input pipeline, augmentation.

    python scripts/benchmark.py --config configs/asff_resnet50.py \
        [--batch_sizes 8,16,32] [--dtypes float32,bfloat16] [--strategies mesh,pmap] \
        [--input] [--repeats 5] [--jsonl results.jsonl]

The steps run on synthetic batches (no data needed): they are the same compiled
train_step and eval_step as training. --input also measures the grain pipeline on the
config's data directory against a plain single-process Pillow loop, and the on-device
augmentation per batch. Prints JSON lines and a markdown table.
"""

import os
import sys

# Configs import each other as `configs.x`: put the repository root on the path.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataclasses
import json

import jax
from absl import app, flags
from ml_collections import config_flags

from skinjax import benchmark, logs
from skinjax.data import augment, sources

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["16"], "Global batch sizes.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes.")
_STRATEGIES = flags.DEFINE_list("strategies", ["mesh"], "Parallel strategies: mesh, pmap.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed steps per measurement (median).")
_INPUT = flags.DEFINE_bool("input", False, "Also measure the input pipeline and augmentation.")
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "grain worker processes to try (--input).")
_JSONL = flags.DEFINE_string("jsonl", None, "Append results as JSON lines to this file.")
flags.mark_flag_as_required("config")


def _emit(record: dict, rows: list[dict]) -> None:
    rows.append(record)
    print(json.dumps(record))
    if _JSONL.value:
        with open(_JSONL.value, "a") as f:
            f.write(json.dumps(record) + "\n")


def _input_benchmarks(config, rows: list[dict]) -> None:
    collection = sources.load(config.data)
    size, batch = config.data.image_size, int(_BATCH_SIZES.value[0])
    _emit(
        {
            "kind": "input",
            "method": "pil_single_process",
            "image_size": size,
            "images_per_s": benchmark.pil_loop_throughput(
                collection, image_size=size, num_images=20 * batch
            ),
        },
        rows,
    )
    for workers in map(int, _WORKERS.value):
        ips = benchmark.pipeline_throughput(
            collection,
            batch_size=batch,
            image_size=size,
            worker_count=workers,
            read_threads=config.data.read_threads,
            num_batches=20,
        )
        _emit(
            {
                "kind": "input",
                "method": f"grain workers={workers} threads={config.data.read_threads}",
                "image_size": size,
                "images_per_s": ips,
            },
            rows,
        )
    aug = augment.Augment(**config.augment)
    seconds = benchmark.augment_cost(aug, batch, size)
    _emit(
        {
            "kind": "augment",
            "batch_size": batch,
            "image_size": size,
            "ms_per_batch": 1000 * seconds,
            "augment": dataclasses.asdict(aug),
        },
        rows,
    )


def main(argv):
    del argv
    logs.quiet_libraries()
    config = _CONFIG.value
    rows: list[dict] = []
    peak = benchmark.matmul_peak_gflops()
    _emit(
        {
            "kind": "matmul_peak",
            "dtype": "float32",
            "gflops_per_s": peak,
            "devices": str(jax.devices()),
        },
        rows,
    )
    if _INPUT.value:
        _input_benchmarks(config, rows)
    num_classes = len(config.data.classes) or 2
    for strategy in _STRATEGIES.value:
        for dtype in _DTYPES.value:
            for batch in map(int, _BATCH_SIZES.value):
                config.parallel.strategy, config.model.dtype = strategy, dtype
                report = benchmark.step_throughput(
                    config, batch_size=batch, num_classes=num_classes, repeats=_REPEATS.value
                )
                record = {
                    "kind": "step",
                    "model": config.model.name,
                    "image_size": config.data.image_size,
                    **dataclasses.asdict(report),
                    "fraction_of_matmul_peak": report.train_gflops_per_s / peak,
                }
                _emit(record, rows)
    print(
        "\n| model | strategy | dtype | batch | train img/s | eval img/s | compile s "
        "| GFLOP/s | of peak |\n|---|---|---|---|---|---|---|---|---|"
    )
    for r in rows:
        if r["kind"] == "step":
            print(
                f"| {r['model']} | {r['strategy']} | {r['dtype']} | {r['batch_size']} | "
                f"{r['train_images_per_s']:.2f} | {r['eval_images_per_s']:.2f} | "
                f"{r['train_compile_s']:.1f} | {r['train_gflops_per_s']:.0f} | "
                f"{r['fraction_of_matmul_peak']:.0%} |"
            )


if __name__ == "__main__":
    app.run(main)

r"""Throughput of a config's model: train and eval steps, input pipeline, augmentation.

    python scripts/benchmark.py --config configs/asff_resnet50.py \
        [--batch_sizes 8,16,32] [--dtypes float32,bfloat16] [--strategies mesh,pmap] \
        [--compare torch] [--torch_variants eager,channels_last,compile] \
        [--plot throughput.png] [--input] [--repeats 5] [--jsonl results.jsonl] \
        [--xla_kernels]
    python scripts/benchmark.py --config configs/smoke.py --input_only --workers 0,1,2 \
        --config.data.source=prepared --config.data.dir=/data/isic-224px \
        --config.data.image_size=224 --config.data.read_threads=1 --batch_sizes 32

The steps run on synthetic batches (no data needed): they are the same compiled
train_step and eval_step as training. --compare torch times torchvision's twin of the
model (see skinjax/tools/torch_peer.py) in the same rounds as skinjax's steps, alternating
them, and reports the ratio skinjax / PyTorch. --input also measures the grain pipeline
on the config's data directory against a plain single-process Pillow loop, the
on-device augmentation per batch, and the train step fed by that pipeline as the loop
feeds it (end to end) against the step alone. --xla_kernels also times skinjax's steps
traced with XLA's own convolutions and BatchNorm instead of oneDNN's
(kernels.onednn.disabled), in the same rounds. --input_only times the grain pipeline
alone (no model), on the collection or, with config.data.source='prepared', on the
training split of its prepared copy. Prints JSON lines and markdown tables.
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

import dataclasses
import json
import os

import jax
from absl import flags
from ml_collections import config_flags

from skinjax import cli, host_memory
from skinjax.data import augment, pipeline, prepare, sources
from skinjax.data.reading import ReadOptions
from skinjax.kernels import onednn
from skinjax.tools import benchmark, chip_peaks
from skinjax.train import memory

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.")
_BATCH_SIZES = flags.DEFINE_list("batch_sizes", ["16"], "Global batch sizes.")
_DTYPES = flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes.")
_STRATEGIES = flags.DEFINE_list("strategies", ["mesh"], "Parallel strategies: mesh, pmap.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed steps per measurement (median).")
_INPUT = flags.DEFINE_bool("input", False, "Also measure the input pipeline and augmentation.")
_INPUT_ONLY = flags.DEFINE_bool(
    "input_only", False, "Only measure the grain pipeline (config.data.read_threads, --workers)."
)
_WORKERS = flags.DEFINE_list("workers", ["0", "2"], "grain worker processes to try (--input).")
_STAGE = flags.DEFINE_string("stage", "", "Config stage whose step to time (default: the last).")
_JSONL = flags.DEFINE_string("jsonl", None, "Append results as JSON lines to this file.")
_COMPARE = flags.DEFINE_list("compare", [], "Peers timed alongside skinjax: torch.")
_TORCH_VARIANTS = flags.DEFINE_list(
    "torch_variants", ["eager", "channels_last", "compile"], "PyTorch variants (--compare torch)."
)
_PLOT = flags.DEFINE_string("plot", None, "Write images/s against batch size to this PNG.")
_XLA_KERNELS = flags.DEFINE_bool(
    "xla_kernels", False, "Also time skinjax with XLA's kernels instead of oneDNN's."
)
_MAX_BATCH = flags.DEFINE_bool(
    "max_batch",
    False,
    "Only find the largest train batch that fits the free memory (or "
    "config.train.memory_limit_gib), from XLA's figures for the compiled step; no timing.",
)
flags.mark_flag_as_required("config")


def _emit(record: dict, rows: list[dict]) -> None:
    rows.append(record)
    print(json.dumps(record))
    if _JSONL.value:
        with open(_JSONL.value, "a") as f:
            f.write(json.dumps(record) + "\n")


def _input_collection(config):
    """The training split of a prepared copy (read as training reads it), else the
    collection's files as listed (no scan: a first scan of full-size files takes minutes)."""
    if config.data.source == "prepared":
        return prepare.prepare(config.data).parts["train"]
    return sources.load(config.data)


def _pipeline_benchmarks(config, collection, rows: list[dict]) -> None:
    size, batch = config.data.image_size, int(_BATCH_SIZES.value[0])
    for workers in map(int, _WORKERS.value):
        ips, per_cpu_s = benchmark.pipeline_throughput(
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
                "images_per_cpu_s": per_cpu_s if workers == 0 else None,
            },
            rows,
        )


def _input_benchmarks(config, collection, rows: list[dict]) -> None:
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
    _pipeline_benchmarks(config, collection, rows)
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


def _torch_steps(config, stage, batch: int, dtype: str, threads: int) -> dict[str, object]:
    """PyTorch's steps per variant, warmed up; a variant that fails to run is reported."""
    from skinjax.tools import torch_peer

    if stage.freeze_backbone:
        print(json.dumps({"kind": "peer_error", "error": "no PyTorch peer for a frozen backbone"}))
        return {}
    peers = {}
    for variant in _TORCH_VARIANTS.value:
        try:  # torch.compile compiles here, and may not work for every model
            steps = torch_peer.in_subprocess(
                config.model.name,
                variant=variant,
                batch_size=batch,
                image_size=config.data.image_size,
                num_classes=len(config.data.classes) or 2,
                dtype=dtype,
                optimizer=stage.optimizer,
                learning_rate=stage.learning_rate,
                threads=threads,
            )
            steps.train(), steps.eval()
        except Exception as e:  # any failure (e.g. of the compiler) just drops the variant
            print(json.dumps({"kind": "peer_error", "variant": variant, "error": repr(e)[:300]}))
            continue
        peers[f"torch {variant}"] = steps
    return peers


def _end_to_end(config, steps, collection, batch: int, common: dict, rows: list[dict]) -> None:
    """The training loop's feeding against the step alone (--input)."""
    batches = iter(
        pipeline.train_dataset(
            collection, ReadOptions.from_config(config.data), batch_size=batch, seed=0
        )
    )
    t = benchmark.end_to_end(steps, batches, num_steps=10, rounds=_REPEATS.value, batch=batch)
    _emit(
        {
            "kind": "end_to_end",
            **common,
            "worker_count": config.data.worker_count,
            "end_to_end_images_per_s": t["end_to_end"].images_per_s,
            "step_images_per_s": t["step"].images_per_s,
            "end_to_end_over_step": t["step"].median_s / t["end_to_end"].median_s,
        },
        rows,
    )


def _max_batch(config, rows: list[dict]) -> None:
    """The largest train batch whose step fits the memory the training run would allow."""
    stage = _STAGE.value or list(config.stages)[-1]
    limit = config.train.memory_limit_gib
    free = limit * memory.GIB if limit > 0 else memory.free_bytes(jax.local_devices()[0])[0]
    for dtype in _DTYPES.value:
        config.model.dtype = dtype

        def fits(batch: int) -> bool:
            need = benchmark.train_step_memory(
                config, stage=stage, batch_size=batch, num_classes=len(config.data.classes) or 2
            )
            print(f"batch {batch}: {need.describe()}", flush=True)
            return need.total <= free

        largest = benchmark.max_batch_size(fits, multiple=jax.device_count())
        record = {"kind": "max_batch", "model": config.model.name, "stage": stage, "dtype": dtype}
        record |= {"image_size": config.data.image_size, "free_gib": free / memory.GIB}
        _emit(record | {"max_batch_size": largest}, rows)


def _step_benchmarks(config, peak: float, rows: list[dict], collection=None) -> None:
    """Train and eval steps (and peers); with ``collection``, also end to end."""
    num_classes = len(config.data.classes) or 2
    threads = len(os.sched_getaffinity(0))  # what JAX's CPU client uses
    stage = _STAGE.value or list(config.stages)[-1]
    for strategy in _STRATEGIES.value:
        for dtype in _DTYPES.value:
            for batch in map(int, _BATCH_SIZES.value):
                config.parallel.strategy, config.model.dtype = strategy, dtype
                steps = benchmark.compiled_steps(
                    config, stage=stage, batch_size=batch, num_classes=num_classes
                )
                impls = {"skinjax": steps}
                if _XLA_KERNELS.value:
                    with onednn.disabled():
                        impls["skinjax xla-kernels"] = benchmark.compiled_steps(
                            config, stage=stage, batch_size=batch, num_classes=num_classes
                        )
                peers = {}
                if "torch" in _COMPARE.value:
                    peers = _torch_steps(config, config.stages[stage], batch, dtype, threads)
                impls |= peers
                # Train rounds, then eval rounds: each process's peak memory is read
                # after each phase (reset before it), so each figure is that step's own.
                t, peaks = {}, {}
                for kind in ("train", "eval"):
                    for impl in impls.values():
                        impl.reset_peak()
                    fns = {f"{name} {kind}": getattr(impl, kind) for name, impl in impls.items()}
                    t |= benchmark.time_alternating(fns, repeats=_REPEATS.value, batch=batch)
                    peaks |= {f"{name} {kind}": impl.peak_bytes() for name, impl in impls.items()}
                for peer in peers.values():
                    peer.close()
                common = {
                    "model": config.model.name,
                    "stage": stage,
                    "image_size": config.data.image_size,
                    "strategy": strategy,
                    "dtype": dtype,
                    "batch_size": batch,
                    "threads": threads,
                    "load_average": os.getloadavg()[0],
                    "keep_freed_memory": host_memory.keeps_freed_memory(),
                    "huge_pages": host_memory.uses_huge_pages(),
                    "block_cache": host_memory.uses_block_cache(),
                }
                train_s = t["skinjax train"].median_s
                xla = {
                    f"xla_{kind}_gib": m.total / memory.GIB
                    for kind, m in (("train", steps.train_memory), ("eval", steps.eval_memory))
                    if m is not None
                }
                device = jax.local_devices()[0]
                if device.platform != "cpu":  # the device's own peak, since the process began
                    xla["device_peak_gib"] = (device.memory_stats() or {}).get(
                        "peak_bytes_in_use", float("nan")
                    ) / memory.GIB
                chip = chip_peaks.utilisation(  # the chip's peak is unknown on CPUs
                    steps.train_flops, train_s, jax.device_count(), device.device_kind, dtype
                )
                _emit(
                    {
                        "kind": "step",
                        "implementation": "skinjax",
                        **common,
                        "kernels": "onednn" if onednn.available() else "xla",
                        "train_images_per_s": t["skinjax train"].images_per_s,
                        "eval_images_per_s": t["skinjax eval"].images_per_s,
                        "train_compile_s": steps.compile_s,
                        "train_gflops_per_image": steps.train_flops / batch / 1e9,
                        "train_gflops_per_s": steps.train_flops / train_s / 1e9,
                        "fraction_of_matmul_peak": steps.train_flops / train_s / 1e9 / peak,
                        **chip,
                        "train_peak_host_gib": peaks["skinjax train"] / memory.GIB,
                        "eval_peak_host_gib": peaks["skinjax eval"] / memory.GIB,
                        **xla,
                    },
                    rows,
                )
                if collection is not None:
                    _end_to_end(config, steps, collection, batch, common, rows)
                for name in list(impls)[1:]:  # the peers, in --torch_variants order
                    record = {
                        "kind": "step",
                        "implementation": name,
                        "peer_model": getattr(impls[name], "model", config.model.name),
                        **common,
                    }
                    for kind in ("train", "eval"):
                        ours, theirs = t[f"skinjax {kind}"], t[f"{name} {kind}"]
                        median, low, high = benchmark.ratio_spread(ours, theirs)
                        record |= {
                            f"{kind}_images_per_s": theirs.images_per_s,
                            f"{kind}_peak_host_gib": peaks[f"{name} {kind}"] / memory.GIB,
                            f"skinjax_over_peer_{kind}": median,
                            f"skinjax_over_peer_{kind}_range": [low, high],
                            f"skinjax_over_peer_{kind}_memory": peaks[f"skinjax {kind}"]
                            / peaks[f"{name} {kind}"],
                        }
                    _emit(record, rows)


def _print_tables(rows: list[dict]) -> None:
    steps = [r for r in rows if r["kind"] == "step"]
    print(
        "\n| model | strategy | dtype | batch | train img/s | eval img/s | compile s "
        "| GFLOP/s | of matmul peak | of chip peak | load |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for r in steps:
        if r["implementation"] == "skinjax":
            chip = r["fraction_of_chip_peak"]
            chip = "unknown" if chip is None else f"{chip:.0%} of {r['chip_peak_tflops']:.0f} T"
            print(
                f"| {r['model']} | {r['strategy']} | {r['dtype']} | {r['batch_size']} | "
                f"{r['train_images_per_s']:.2f} | {r['eval_images_per_s']:.2f} | "
                f"{r['train_compile_s']:.1f} | {r['train_gflops_per_s']:.0f} | "
                f"{r['fraction_of_matmul_peak']:.0%} | {chip} ({r['device_kind']}) | "
                f"{r['load_average']:.1f} |"
            )
    loops = [r for r in rows if r["kind"] == "end_to_end"]
    if loops:
        print(
            "\n| model | dtype | batch | grain workers | end-to-end img/s | step img/s "
            "| end-to-end / step |\n|---|---|---|---|---|---|---|"
        )
    for r in loops:
        print(
            f"| {r['model']} | {r['dtype']} | {r['batch_size']} | {r['worker_count']} | "
            f"{r['end_to_end_images_per_s']:.2f} | {r['step_images_per_s']:.2f} | "
            f"{r['end_to_end_over_step']:.2f} |"
        )
    peers = [r for r in steps if r["implementation"] != "skinjax"]
    if not peers:
        return
    print(
        "\n| model (peer) | dtype | batch | implementation | train img/s | eval img/s "
        "| skinjax/peer train | skinjax/peer eval |\n|---|---|---|---|---|---|---|---|"
    )
    for r in peers:
        print(
            f"| {r['model']} ({r['peer_model']}) | {r['dtype']} | {r['batch_size']} | "
            f"{r['implementation']} | {r['train_images_per_s']:.2f} | "
            f"{r['eval_images_per_s']:.2f} | {r['skinjax_over_peer_train']:.2f} | "
            f"{r['skinjax_over_peer_eval']:.2f} |"
        )


def main(argv):
    del argv
    config = _CONFIG.value
    rows: list[dict] = []
    if _MAX_BATCH.value:
        _max_batch(config, rows)
        return
    if _INPUT_ONLY.value:
        _pipeline_benchmarks(config, _input_collection(config), rows)
        return
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
    collection = sources.load(config.data) if _INPUT.value else None
    if collection is not None:
        _input_benchmarks(config, collection, rows)
    _step_benchmarks(config, peak, rows, collection)
    _print_tables(rows)
    if _PLOT.value:
        benchmark.plot_throughput([r for r in rows if r["kind"] == "step"], _PLOT.value)


if __name__ == "__main__":
    cli.run(main)

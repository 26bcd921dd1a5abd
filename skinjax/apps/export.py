"""Portable artifacts of a trained classifier, and a loader that needs no model code.

`export` turns a training work directory into a directory that runs without skinjax:

    model.stablehlo      jax.export, serialized: images -> (logits, probabilities)
    gradcam.stablehlo    jax.export, serialized: images -> Grad-CAM heat maps
    model.onnx           the function of model.stablehlo, through jax2onnx (weights in
                         model.onnx.data beside it for large models)
    weights.safetensors  parameters and BatchNorm statistics, named by nnx path
    model_card.json      classes, input, normalisation, metrics, config, source step,
                         FLOPs, and the size and sha256 of every other file
    MODEL_CARD.md        the same for people, with how to run both files

The input is uint8 RGB images [B, S, S, 3] (NHWC) for any batch size B (a symbolic
dimension) at the training size S: uint8 is what decoders give and what the training
pipeline feeds, and the exported functions scale to [0, 1] and normalise with the
training mean and std themselves, so users feed raw pixels and cannot get the
normalisation wrong. Resizing (bilinear, the whole image) is the caller's. The outputs
are float32 [B, C] logits and softmax probabilities, and [B, S, S] heat maps in [0, 1]
of the predicted class. Both model files are checked against the live model when
written, at batch sizes 1 and 5.

The directory is written whole or not at all: into a temporary directory beside it,
renamed when complete. An existing non-empty directory is refused unless asked to
replace it, and then replaced whole, so no file of an earlier export is left beside
the new ones. `load` checks every file it runs against the card's sha256, so that a
modified or truncated file is an error naming it, never a changed prediction.

jax2onnx (0.17) needs two work-arounds, both in `_onnx_friendly`: it replaces flax.nnx
functions while it traces (its nnx.max_pool takes neither positional arguments nor
explicit padding), so the function is traced to a jaxpr here and handed over as lax
primitives; and it lowers an NHWC max pool to a 4-D ONNX MaxPool, which onnxruntime
refuses, so each becomes a 3-D pool over (N * C, H, W).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax
from jax.extend import core as jax_core
from safetensors import numpy as safetensors_numpy

from skinjax.apps import explain
from skinjax.kernels import flops, onednn
from skinjax.train import build, trained

STABLEHLO = "model.stablehlo"
GRADCAM = "gradcam.stablehlo"
ONNX = "model.onnx"
WEIGHTS = "weights.safetensors"
CARD = "model_card.json"
CARD_MARKDOWN = "MODEL_CARD.md"
PLATFORMS = ("cpu", "cuda", "tpu")
CHECK_BATCH_SIZES = (1, 5)
FORMAT = "skinjax-export/2"  # /2: the card has checksums and forward_flops_per_image

Array = jax.Array


class ExportError(RuntimeError):
    """An exported file that does not reproduce the live model, or an output directory
    that is not empty."""


class ArtifactError(ValueError):
    """An artifact file that is missing, modified or damaged."""


def inference_functions(
    run: trained.Trained,
) -> tuple[Callable[[Array], tuple[Array, Array]], Callable[[Array], Array]]:
    """The run's model on uint8 images, as exported: (logits, probabilities) and heat maps."""
    graph, state = nnx.split(run.model)
    normalize = build.normalization(run.config)
    layer = run.model.cam_layers[0]

    def classify(images: Array) -> tuple[Array, Array]:
        logits = nnx.merge(graph, state)(normalize(images))
        return logits, jax.nn.softmax(logits)

    def heatmaps(images: Array) -> Array:
        maps, _ = explain.activation_maps(
            nnx.merge(graph, state),
            normalize(images),
            jnp.full(images.shape[:1], -1, jnp.int32),
            method="gradcam",
            layer=layer,
        )
        return maps.heatmaps

    return classify, heatmaps


def input_spec(image_size: int) -> jax.ShapeDtypeStruct:
    (batch,) = jax.export.symbolic_shape("B")
    return jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.uint8)


# --- ONNX -------------------------------------------------------------------------


def _max_pool_3d(x: Array, **params) -> Array:
    """An NHWC max pool over H and W as a 3-D pool over (N * C, H, W): same values."""
    window, strides, padding = (
        params[k] for k in ("window_dimensions", "window_strides", "padding")
    )
    if (window[0], window[3], strides[0], strides[3]) != (1, 1, 1, 1) or any(
        d != 1 for d in (*params["base_dilation"], *params["window_dilation"])
    ):
        raise NotImplementedError(f"ONNX export handles NHWC spatial max pools only, not {params}")
    n, h, w, c = x.shape
    pooled = lax.reduce_window_max_p.bind(
        jnp.transpose(x, (0, 3, 1, 2)).reshape(n * c, h, w),
        window_dimensions=(1, *window[1:3]),
        window_strides=(1, *strides[1:3]),
        padding=((0, 0), *padding[1:3]),
        base_dilation=(1, 1, 1),
        window_dilation=(1, 1, 1),
    )
    return jnp.transpose(pooled.reshape(n, c, *pooled.shape[1:]), (0, 2, 3, 1))


def _evaluate(jaxpr: jax_core.Jaxpr, consts: Sequence[Any], *args: Any) -> list[Any]:
    """Evaluates a jaxpr with calls inlined and max pools made 3-D (see the module doc)."""
    env: dict[Any, Any] = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    read = lambda v: v.val if isinstance(v, jax_core.Literal) else env[v]
    for eqn in jaxpr.eqns:
        inputs = [read(v) for v in eqn.invars]
        if eqn.primitive is lax.reduce_window_max_p:
            outputs = [_max_pool_3d(*inputs, **eqn.params)]
        elif eqn.primitive.name in ("jit", "pjit", "custom_jvp_call", "custom_vjp_call"):
            inner = eqn.params.get("jaxpr") or eqn.params["call_jaxpr"]
            outputs = _evaluate(inner.jaxpr, inner.consts, *inputs)
        else:
            outputs = eqn.primitive.bind(*inputs, **eqn.primitive.get_bind_params(eqn.params))
            outputs = outputs if eqn.primitive.multiple_results else [outputs]
        env.update(zip(eqn.outvars, outputs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def _onnx_friendly(fn: Callable, spec: jax.ShapeDtypeStruct) -> Callable:
    closed = jax.make_jaxpr(fn)(spec)
    return lambda images: tuple(_evaluate(closed.jaxpr, closed.consts, images))


@contextlib.contextmanager
def _quiet(logger: logging.Logger, level: int) -> Iterator[None]:
    """Drops ``logger``'s records below ``level`` for the duration (jax2onnx's chatter)."""
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _write_onnx(fn: Callable, spec: jax.ShapeDtypeStruct, path: str) -> None:
    try:
        import jax2onnx
    except ImportError as e:
        raise ImportError(
            'ONNX export needs jax2onnx: pip install -e ".[export]" and then '
            "pip install --no-deps jax2onnx==0.17.1 (its declared dependencies would "
            "downgrade orbax-checkpoint; see docs/explain_export.md), or export with onnx=False."
        ) from e
    # onnx_ir warns once per untyped shape constant, hundreds of times; the ONNX model is
    # checked against the live one anyway.
    with (
        _quiet(logging.getLogger("jax2onnx"), logging.WARNING),
        _quiet(logging.getLogger("onnx_ir.serde"), logging.ERROR),
    ):
        jax2onnx.to_onnx(
            _onnx_friendly(fn, spec),
            [spec],
            model_name="skinjax",
            input_names=["images"],
            output_names=["logits", "probabilities"],
            return_mode="file",
            output_path=path,
        )


def _onnx_logits(path: str) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda images: session.run(["logits"], {"images": images})[0]


# --- export -----------------------------------------------------------------------


def _flat_weights(model: nnx.Module) -> dict[str, np.ndarray]:
    state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)).to_pure_dict()
    return {
        ".".join(str(k.key) for k in path): np.ascontiguousarray(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
    }


def _max_difference(
    logits: Callable[[np.ndarray], Any], expected: Callable[[np.ndarray], Any], image_size: int
) -> float:
    rng = np.random.default_rng(0)
    worst = 0.0
    for batch in CHECK_BATCH_SIZES:
        images = rng.integers(0, 256, (batch, image_size, image_size, 3), np.uint8)
        difference = np.abs(np.asarray(logits(images)) - np.asarray(expected(images)))
        worst = max(worst, float(difference.max()))
    return worst


def _validation_metrics(workdir: str) -> dict[str, Any] | None:
    path = os.path.join(workdir, "eval_val", "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        metrics = json.load(f)
    keep = ("split", "num_examples", "threshold", "intervals_95")
    return {k: v for k, v in metrics.items() if np.ndim(v) == 0 or k in keep}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def export(
    workdir: str,
    out_dir: str,
    *,
    platforms: Sequence[str] = PLATFORMS,
    onnx: bool = True,
    tolerance: float = 1e-4,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes the artifact of ``workdir``'s best checkpoint to ``out_dir``; returns the card.

    Raises `ExportError` if ``out_dir`` holds files and not ``overwrite``, or if an
    exported file's logits differ from the live model's by more than ``tolerance``
    (checked when ``platforms`` include 'cpu', for StableHLO); ``out_dir`` is then as it was.
    """
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise ExportError(
            f"{out_dir} is not empty. Export to a new directory, or replace this one "
            "whole with --overwrite."
        )
    run = trained.load(workdir)
    out_dir = os.path.abspath(out_dir)
    staging = f"{out_dir}.{uuid.uuid4().hex[:8]}.tmp"  # beside it: the rename stays on one disk
    os.makedirs(staging)
    try:
        card = _write(run, staging, platforms=platforms, onnx=onnx, tolerance=tolerance)
        if os.path.isdir(out_dir):
            replaced = f"{staging}.old"
            os.rename(out_dir, replaced)
            os.rename(staging, out_dir)
            shutil.rmtree(replaced)
        else:
            os.rename(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # left only if something failed
    return card


def _write(
    run: trained.Trained,
    out_dir: str,
    *,
    platforms: Sequence[str],
    onnx: bool,
    tolerance: float,
) -> dict[str, Any]:
    """Writes the artifact's files to the empty ``out_dir``; returns the card."""
    classify, heatmaps = inference_functions(run)
    spec = input_spec(run.image_size)
    live = jax.jit(lambda images: classify(images)[0])
    # The artifact holds XLA's own convolutions (no oneDNN custom calls), so it runs on
    # every platform without skinjax; the checks below compare it with the live model.
    with onednn.disabled():
        for name, fn in ((STABLEHLO, classify), (GRADCAM, heatmaps)):
            exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(spec)
            with open(os.path.join(out_dir, name), "wb") as f:
                f.write(exported.serialize())
    checks: dict[str, float] = {}
    if "cpu" in platforms:
        stablehlo = _deserialize(os.path.join(out_dir, STABLEHLO))
        checks["stablehlo"] = _max_difference(lambda x: stablehlo(x)[0], live, run.image_size)
    if onnx:
        with onednn.disabled():
            _write_onnx(classify, spec, os.path.join(out_dir, ONNX))
        checks["onnx"] = _max_difference(
            _onnx_logits(os.path.join(out_dir, ONNX)), live, run.image_size
        )
    failed = {k: v for k, v in checks.items() if v > tolerance}
    if failed:
        raise ExportError(f"exported logits differ from the live model's by {failed} > {tolerance}")
    safetensors_numpy.save_file(
        _flat_weights(run.model), os.path.join(out_dir, WEIGHTS), metadata={"format": "nnx"}
    )
    card = _card(run, out_dir, platforms, checks, flops.forward(run.model, run.image_size))
    with open(os.path.join(out_dir, CARD), "w") as f:
        json.dump(card, f, indent=2)
    with open(os.path.join(out_dir, CARD_MARKDOWN), "w") as f:
        f.write(_card_markdown(card))
    return card


def _checksum(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"bytes": os.path.getsize(path), "sha256": digest}


def _card(
    run: trained.Trained,
    out_dir: str,
    platforms: Sequence[str],
    checks: dict[str, float],
    forward_flops: float,
) -> dict[str, Any]:
    """The card of the files in ``out_dir``, with their sizes and sha256."""
    config = run.config
    written = sorted(os.listdir(out_dir))
    size, classes = run.image_size, list(run.classes)
    return {
        "format": FORMAT,
        "model": {"name": config.model.name, "options": dict(config.model.options)},
        "classes": classes,
        "input": {
            "name": "images",
            "shape": [None, size, size, 3],
            "dtype": "uint8",
            "layout": "NHWC",
            "channels": "RGB",
            "resize": f"the whole image to {size}x{size}, bilinear, before the model",
        },
        "normalization": {
            "inside_model": True,
            "formula": "(images / 255 - mean) / std",
            "mean": list(config.data.mean),
            "std": list(config.data.std),
        },
        "outputs": {
            "logits": [None, len(classes)],
            "probabilities": [None, len(classes)],
            "heatmaps": [None, size, size],
        },
        "files": {
            "stablehlo": STABLEHLO,
            "gradcam_stablehlo": GRADCAM,
            # large models keep their weights in model.onnx.data
            "onnx": [f for f in written if f.startswith(ONNX)],
            "weights": WEIGHTS,
        },
        "checksums": {f: _checksum(os.path.join(out_dir, f)) for f in written},
        "forward_flops_per_image": forward_flops,  # `skinjax.kernels.flops.count`
        "gradcam_layer": run.model.cam_layers[0],
        "platforms": list(platforms),
        "export_check": {
            "max_abs_logit_difference": checks,
            "batch_sizes": list(CHECK_BATCH_SIZES),
        },
        "validation_metrics": _validation_metrics(run.workdir),
        # scripts/evaluate.py averages with the mirror image when this is set; these
        # files do not.
        "validation_flip_tta": bool(config.eval.flip_tta),
        "source": {
            "workdir": os.path.abspath(run.workdir),
            "checkpoint_step": run.step,
            "best_metric": config.train.best_metric,
            "best_value": run.best,
        },
        "training_config": config.to_dict(),
        "versions": {p: _version(p) for p in ("skinjax", "jax", "flax", "jax2onnx")},
    }


def _card_markdown(card: dict[str, Any]) -> str:
    size = card["input"]["shape"][1]
    norm = card["normalization"]
    lines = [
        f"# {card['model']['name']}: {' / '.join(card['classes'])}",
        "",
        f"- Classes, in output order: {', '.join(card['classes'])}",
        f"- Input `images`: uint8 RGB, NHWC, [batch, {size}, {size}, 3], any batch size; "
        f"resize {card['input']['resize'].removeprefix('the ')}.",
        f"- Normalisation, inside the model: {norm['formula']}, mean {norm['mean']}, "
        f"std {norm['std']}.",
        "- Outputs: `logits` and `probabilities`, float32 [batch, classes]; "
        f"`{GRADCAM}` gives Grad-CAM heat maps [batch, {size}, {size}] in [0, 1] "
        f"(predicted class, layer `{card['gradcam_layer']}`).",
        f"- Cost: {card['forward_flops_per_image'] / 1e9:.3g} GFLOPs per image "
        "(forward pass, a multiply-add counting two).",
        f"- Source: `{card['source']['workdir']}`, checkpoint step "
        f"{card['source']['checkpoint_step']} (best validation "
        f"{card['source']['best_metric']} {card['source']['best_value']:.4f}).",
        "",
        "## Run",
        "",
        "```python",
        "import jax, numpy as np",
        "from PIL import Image",
        "",
        f'image = Image.open("lesion.jpg").convert("RGB").resize(({size}, {size}), Image.BILINEAR)',
        "batch = np.asarray(image)[None]",
        f'model = jax.export.deserialize(open("{STABLEHLO}", "rb").read())',
        "logits, probabilities = model.call(batch)",
        "```",
        "",
    ]
    if card["files"]["onnx"]:
        lines += [
            "```python",
            "import onnxruntime",
            "",
            f'session = onnxruntime.InferenceSession("{ONNX}")',
            'logits, probabilities = session.run(None, {"images": batch})',
            "```",
            "",
        ]
    metrics = card["validation_metrics"]
    if metrics:
        lines += [
            f"## Validation metrics ({metrics.get('num_examples', '?')} images)",
            "",
            *(
                ["Measured averaging each image with its mirror image; this model does not.", ""]
                if card["validation_flip_tta"]
                else []
            ),
            "| metric | value | 95% interval |",
            "|---|---|---|",
        ]
        intervals = metrics.get("intervals_95", {})
        for name, value in metrics.items():
            if isinstance(value, int | float) and name not in ("num_examples", "threshold"):
                low, high = intervals.get(name, (None, None))
                interval = f"{low:.3f} to {high:.3f}" if low is not None else ""
                lines.append(f"| {name} | {value:.4f} | {interval} |")
        lines.append("")
    checks = card["export_check"]["max_abs_logit_difference"]
    lines += [
        "Checked at export: largest logit difference from the live model "
        + ", ".join(f"{k} {v:.1e}" for k, v in checks.items())
        + f" (batch sizes {card['export_check']['batch_sizes']}). The training config "
        f"is in `{CARD}`.",
        "",
    ]
    return "\n".join(lines)


# --- loading ----------------------------------------------------------------------


class Artifact:
    """An exported directory, run with jax alone: no skinjax model code is involved."""

    def __init__(self, directory: str):
        with open(os.path.join(directory, CARD)) as f:
            self.card = json.load(f)
        self.classes: tuple[str, ...] = tuple(self.card["classes"])
        self.image_size: int = self.card["input"]["shape"][1]
        checksums = self.card.get("checksums")
        if checksums is None:  # written as skinjax-export/1
            logging.warning("%s: the model card has no checksums; files not verified", directory)
        else:  # the files run here
            for name in (STABLEHLO, GRADCAM):
                verify(os.path.join(directory, name), checksums.get(name))
        self._classify = _deserialize(os.path.join(directory, STABLEHLO))
        self._heatmaps = _deserialize(os.path.join(directory, GRADCAM))

    def __call__(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B, S, S, 3] RGB images -> (logits, probabilities), float32 [B, C]."""
        logits, probabilities = self._classify(images)
        return np.asarray(logits), np.asarray(probabilities)

    def gradcam(self, images: np.ndarray) -> np.ndarray:
        """uint8 [B, S, S, 3] RGB images -> heat maps [B, S, S] in [0, 1]."""
        return np.asarray(self._heatmaps(images))


def verify(path: str, expected: dict[str, Any] | None) -> None:
    """Raises `ArtifactError` naming ``path`` unless its size and sha256 are ``expected``."""
    if expected is None:
        raise ArtifactError(f"{path}: not listed in the model card's checksums; export again.")
    if not os.path.isfile(path):
        raise ArtifactError(f"{path}: missing; export again.")
    found = _checksum(path)
    if found["bytes"] != expected["bytes"]:
        raise ArtifactError(
            f"{path}: {found['bytes']} bytes where the model card records {expected['bytes']}: "
            "truncated or replaced; export again."
        )
    if found["sha256"] != expected["sha256"]:
        raise ArtifactError(
            f"{path}: sha256 {found['sha256']} where the model card records "
            f"{expected['sha256']}: the file was modified; export again."
        )


def _deserialize(path: str) -> Callable:
    with open(path, "rb") as f:
        data = f.read()
    try:
        exported = jax.export.deserialize(bytearray(data))
    except Exception as e:  # flatbuffers raise struct.error, IndexError, ... naming no file
        raise ArtifactError(f"{path}: not a readable jax.export file ({e!r}); export again.") from e
    return jax.jit(exported.call)  # compiled once per batch size


def load(directory: str) -> Artifact:
    """The artifact that `export` wrote to ``directory``."""
    return Artifact(directory)

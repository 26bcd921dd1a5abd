"""The PyTorch peer runs in a child process and reports its failures to the parent."""

import importlib.util

import pytest

from skinjax.tools import torch_peer

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torchvision") is None, reason="torch is a dev extra"
)
TINY = dict(
    batch_size=2,
    image_size=32,
    num_classes=2,
    optimizer="adam",
    learning_rate=1e-3,
    threads=1,
)


def test_steps_run_in_a_child_process_until_closed():
    peer = torch_peer.in_subprocess("resnet18", variant="channels_last", dtype="bfloat16", **TINY)
    assert peer.model == "resnet18"
    peer.train(), peer.eval(), peer.train()
    # The child's own peak memory: torch and a model, but not this process's JAX.
    peak = peer.peak_bytes()
    assert 100 << 20 < peak < 4 << 30
    peer.reset_peak()
    assert peer.peak_bytes() <= peak
    peer.close()
    with pytest.raises(ValueError, match="closed file"):
        peer.train()  # its pipe is closed and the process has exited


def test_a_failure_in_the_child_raises_in_the_parent():
    with pytest.raises(RuntimeError, match="variant must be one of"):
        torch_peer.in_subprocess("resnet18", variant="bogus", dtype="float32", **TINY)
    with pytest.raises(RuntimeError, match="no torchvision peer"):
        torch_peer.in_subprocess("no_such_model", variant="eager", dtype="float32", **TINY)

"""Dense peak FLOP/s of accelerator chips by jax's ``Device.device_kind``, so that the
benchmark can say which fraction of the chip a train step uses (docs/accelerators.md).

Vendors' figures, without sparsity. ``float32`` is the peak of float32 matrix products
at JAX's default precision, which rounds their inputs (TF32 on NVIDIA tensor cores,
one bfloat16 pass on TPUs), as skinjax's steps run them. A chip that is not listed,
and every CPU, has no peak here: the benchmark then says so instead of guessing.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Peak:
    chip: str
    bfloat16: float  # FLOP/s
    float32: float  # FLOP/s at JAX's default matmul precision
    source: str


_A100 = Peak(
    "NVIDIA A100",
    312e12,
    156e12,  # TF32
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf",
)
_H100_DATASHEET = "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
_H100_SXM = Peak("NVIDIA H100 SXM", 989e12, 494e12, _H100_DATASHEET)
_H100_PCIE = Peak("NVIDIA H100 PCIe", 756e12, 378e12, _H100_DATASHEET)


def _tpu(chip: str, bfloat16: float, page: str) -> Peak:
    return Peak(chip, bfloat16, bfloat16, f"https://cloud.google.com/tpu/docs/{page}")


# Keys: device_kind exactly as jax reports it.
PEAKS: dict[str, Peak] = {
    "NVIDIA A100-SXM4-40GB": _A100,
    "NVIDIA A100-SXM4-80GB": _A100,
    "NVIDIA A100-PCIE-40GB": _A100,
    "NVIDIA A100 80GB PCIe": _A100,
    "NVIDIA H100 80GB HBM3": _H100_SXM,
    "NVIDIA H100 PCIe": _H100_PCIE,
    "TPU v4": _tpu("TPU v4", 275e12, "v4"),
    "TPU v5 lite": _tpu("TPU v5e", 197e12, "v5e"),
    "TPU v5": _tpu("TPU v5p", 459e12, "v5p"),
    "TPU v6 lite": _tpu("TPU v6e", 918e12, "v6e"),
}


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """The chip's dense peak FLOP/s for ``dtype`` ('float32' or 'bfloat16') compute, or
    None when the device kind is not in `PEAKS`."""
    peak = PEAKS.get(device_kind)
    return None if peak is None else getattr(peak, dtype)


def utilisation(
    flops_per_step: float, step_s: float, num_devices: int, device_kind: str, dtype: str
) -> dict[str, float | str | None]:
    """What a step of ``flops_per_step`` (the whole program, over ``num_devices`` chips)
    in ``step_s`` seconds achieves per chip, and its fraction of the chip's peak: None
    where unknown (an unlisted chip or a CPU; a step whose FLOPs were not counted)."""
    peak = peak_flops(device_kind, dtype)
    achieved = flops_per_step / step_s / num_devices if flops_per_step > 0 else None
    return {
        "device_kind": device_kind,
        "chip_peak_tflops": None if peak is None else peak / 1e12,
        "train_tflops_per_chip": None if achieved is None else achieved / 1e12,
        "fraction_of_chip_peak": None if peak is None or achieved is None else achieved / peak,
    }

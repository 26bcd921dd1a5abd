import pytest

from skinjax.tools import chip_peaks


def test_a_known_chip_gives_its_peak_per_dtype():
    assert chip_peaks.peak_flops("NVIDIA A100-SXM4-80GB", "bfloat16") == 312e12
    assert chip_peaks.peak_flops("NVIDIA A100-SXM4-80GB", "float32") == 156e12  # TF32
    assert chip_peaks.peak_flops("TPU v5 lite", "bfloat16") == 197e12
    # "TPU v5" is v5p: a prefix match would give it v5e's figure, or v5e v5p's
    assert chip_peaks.peak_flops("TPU v5", "bfloat16") == 459e12


@pytest.mark.parametrize("kind", ["cpu", "NVIDIA A100", "TPU v7x", "AMD Instinct MI300X"])
def test_an_unknown_chip_has_no_peak(kind):
    assert chip_peaks.peak_flops(kind, "bfloat16") is None
    report = chip_peaks.utilisation(24e9 * 256, 0.5, 1, kind, "bfloat16")
    assert report["chip_peak_tflops"] is None and report["fraction_of_chip_peak"] is None
    assert report["train_tflops_per_chip"] == pytest.approx(24e9 * 256 / 0.5 / 1e12)


def test_utilisation_is_per_chip_against_the_chips_peak():
    # 8 TPU v4 chips, 8 x 256 images of 24 GFLOP in 0.2 s: 30.72 TFLOP/s per chip of 275
    report = chip_peaks.utilisation(24e9 * 2048, 0.2, 8, "TPU v4", "bfloat16")
    assert report == {
        "device_kind": "TPU v4",
        "chip_peak_tflops": 275.0,
        "train_tflops_per_chip": pytest.approx(30.72),
        "fraction_of_chip_peak": pytest.approx(30.72 / 275),
    }


def test_an_uncounted_step_has_no_utilisation():
    report = chip_peaks.utilisation(0.0, 0.2, 1, "TPU v4", "bfloat16")  # pmap steps are not counted
    assert report["train_tflops_per_chip"] is None and report["fraction_of_chip_peak"] is None

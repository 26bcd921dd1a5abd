"""Benchmark arithmetic: end-to-end feeding, per-round ratios, the largest batch that fits."""

import itertools

import numpy as np
import pytest

from skinjax.tools import benchmark


def test_end_to_end_feeds_one_batch_per_step_and_times_both_arms():
    fed_batches, resident_steps = [], []
    steps = benchmark.CompiledSteps(
        train=lambda: resident_steps.append(1) or np.zeros(()),
        eval=lambda: np.zeros(()),
        train_on=lambda batch: fed_batches.append(batch) or np.zeros(()),
        compile_s=0.0,
        train_flops=0.0,
        train_memory=None,
        eval_memory=None,
    )
    batches = iter(itertools.count())
    timings = benchmark.end_to_end(steps, batches, num_steps=3, rounds=2, batch=4)
    assert set(timings) == {"end_to_end", "step"}
    # The first batch warms the pipeline up; then two warm-up and two timed rounds, each
    # of 3 steps, on consecutive batches, never reused.
    assert fed_batches == list(range(1, 13))
    assert len(resident_steps) == 12
    for timing in timings.values():
        np.testing.assert_allclose(timing.images_per_s * timing.median_s, 12)  # 3 x 4 images


def test_ratios_are_taken_round_by_round():
    ours = benchmark.Timing(2.0, 1.0, [1.0, 2.0, 4.0])
    theirs = benchmark.Timing(3.0, 1.0, [2.0, 3.0, 3.0])  # 2x, 1.5x, 0.75x our speed
    assert benchmark.ratio_spread(ours, theirs) == (1.5, 0.75, 2.0)


@pytest.mark.parametrize("largest", [0, 8, 24, 100, 4096])
def test_max_batch_size_is_the_largest_multiple_that_fits(largest):
    asked = []

    def fits(batch):
        asked.append(batch)
        return batch <= largest

    assert benchmark.max_batch_size(fits, multiple=4) == largest // 4 * 4
    assert all(b % 4 == 0 for b in asked) and len(asked) <= 2 * 12

"""The end-to-end timing feeds the step from the pipeline, the other arm does not."""

import itertools

import numpy as np

from skinjax import benchmark


def test_end_to_end_feeds_one_batch_per_step_and_times_both_arms():
    fed_batches, resident_steps = [], []
    steps = benchmark.CompiledSteps(
        train=lambda: resident_steps.append(1) or np.zeros(()),
        eval=lambda: np.zeros(()),
        train_on=lambda batch: fed_batches.append(batch) or np.zeros(()),
        compile_s=0.0,
        train_flops=0.0,
        temp_memory_mb=0.0,
    )
    batches = iter(itertools.count())
    timings = benchmark.end_to_end(steps, batches, num_steps=3, rounds=2, batch=4)
    assert set(timings) == {"end_to_end", "step"}
    # The first batch warms the pipeline up; then a warm-up call and two timed rounds,
    # each of 3 steps, on consecutive batches, never reused.
    assert fed_batches == list(range(1, 10))
    assert len(resident_steps) == 9
    for timing in timings.values():
        np.testing.assert_allclose(timing.images_per_s * timing.median_s, 12)  # 3 x 4 images

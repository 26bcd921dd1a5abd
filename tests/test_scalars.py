"""Logged scalars read back from TensorBoard files, as the run-comparison plots use them."""

import numpy as np
import pytest

from skinjax import plots
from skinjax.tools import scalars


def test_scalars_read_back_by_step_across_resumed_event_files(tmp_path):
    from clu import metric_writers

    for values in ({1: 0.5, 2: 0.25}, {2: 0.2, 3: 0.125}):  # a run, then its resumption
        writer = metric_writers.SummaryWriter(str(tmp_path))
        for step, loss in values.items():
            writer.write_scalars(step, {"train/loss": loss})
        writer.write_images(3, {"samples": np.zeros((1, 4, 4, 3), np.uint8)})
        writer.close()
    logged = scalars.read(str(tmp_path))
    assert set(logged) == {"train/loss"}  # the image is not a scalar
    steps, values = logged["train/loss"]
    np.testing.assert_array_equal(steps, [1, 2, 3])
    np.testing.assert_allclose(values, [0.5, 0.2, 0.125])  # step 2: the resumed value
    plots.plot_runs({"train/loss": {"run": logged["train/loss"]}}, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_a_directory_without_logs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        scalars.read(str(tmp_path))

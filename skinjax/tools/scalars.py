"""Reading back the scalars a run logged to TensorBoard (clu's writers), for plots."""

from __future__ import annotations

import glob
import os

import numpy as np


def read(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (steps, values)}`` of every scalar in ``workdir``'s event files, by step.

    A resumed run appends a new event file; all are read, and a step logged twice keeps
    its last value.
    """
    from tensorboard.backend.event_processing import event_accumulator
    from tensorboard.util import tensor_util

    files = sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files in {workdir}")
    merged: dict[str, dict[int, float]] = {}
    for path in files:
        events = event_accumulator.EventAccumulator(
            path, size_guidance={event_accumulator.TENSORS: 0}
        )
        events.Reload()
        for tag in events.Tags()["tensors"]:
            for event in events.Tensors(tag):
                value = tensor_util.make_ndarray(event.tensor_proto)
                if value.ndim == 0:  # scalars; images are tensors too
                    merged.setdefault(tag, {})[event.step] = float(value)
    return {
        tag: (np.array(sorted(by_step)), np.array([by_step[s] for s in sorted(by_step)]))
        for tag, by_step in merged.items()
    }

"""Running a model over a whole collection: probabilities in collection order."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from skinjax import metrics, parallel
from skinjax.data import pipeline
from skinjax.data.metadata import Encoder
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import Collection
from skinjax.parallel import InFlight, Placement


def predict(
    eval_fn: Callable,
    state,
    collection: Collection,
    placement: Placement,
    read: ReadOptions,
    *,
    batch_size: int,
    metadata: Encoder | None = None,
) -> np.ndarray:
    """[len(collection), num_classes] probabilities, each example exactly once.

    Device outputs are fetched once at the end; the host reads and enqueues the next
    batch while the device computes one (`parallel.InFlight`).
    """
    ds = pipeline.eval_dataset(
        collection,
        read,
        batch_size=parallel.local_batch_size(batch_size, "config.eval.batch_size"),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        metadata=metadata,
    )
    outputs, in_flight = [], InFlight()
    for batch in ds:
        outputs.append(eval_fn(state, placement.put_batch(batch)))
        in_flight.add(outputs[-1])
    gathered = placement.gather(outputs)
    index = np.concatenate([o["index"] for o in gathered])
    mask = np.concatenate([o["mask"] for o in gathered])
    probs = np.concatenate([o["probs"] for o in gathered])
    result = np.zeros((len(collection), probs.shape[1]), np.float32)
    result[index[mask]] = probs[mask]
    if not np.array_equal(np.sort(index[mask]), np.arange(len(collection))):
        raise RuntimeError("evaluation did not visit every example exactly once")
    return result


def scored(probs: np.ndarray, class_counts, *, reweight: bool) -> np.ndarray:
    """The probabilities that metrics and checkpoint choice see, in training and in reports:
    divided by the training class frequencies when ``reweight`` (Steppan & Hanke)."""
    return metrics.reweight_by_inverse_frequency(probs, class_counts) if reweight else probs


def log_loss(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of predicted probabilities (the plateau and early-stopping signal)."""
    picked = probs[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))

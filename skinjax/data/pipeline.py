"""grain input pipelines: indices -> (oversample) -> shuffle -> read + decode + resize
-> batch -> prefetch.

Everything here runs on the host and yields numpy batches of uint8 images, a quarter
of the bytes of float32 on their way to the device; normalisation and augmentation
happen on the device (`skinjax.data.augment`). The datasets are grain MapDatasets up
to batching, so an iterator's state is a position: checkpointed with the model, it
resumes mid-epoch exactly.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np
from absl import flags

from skinjax.data.metadata import Encoder
from skinjax.data.reading import ReadOptions
from skinjax.data.sources import Collection


@dataclasses.dataclass(frozen=True)
class LoadExample:
    """Index into a collection -> one example dict. Picklable, for worker processes.

    Indices at or beyond ``len(paths)`` are padding (eval only): a black image with
    ``mask`` False, so an eval pass keeps a static batch shape and still counts every
    real example exactly once. With ``metadata`` (encoded, one row per path) each
    example also carries its row, zeros for padding.
    """

    paths: tuple[str, ...]
    labels: np.ndarray
    read: ReadOptions
    metadata: np.ndarray | None = None

    def __call__(self, index: int) -> dict[str, np.ndarray]:
        real = index < len(self.paths)
        if real:
            image = self.read.load(self.paths[index])
        else:
            size = self.read.image_size
            image = np.zeros((size, size, 3), np.uint8)
        example = {
            "image": image,
            "label": np.int32(self.labels[index] if real else 0),
            "index": np.int32(index if real else -1),
            "mask": np.bool_(real),
        }
        if self.metadata is not None:
            example["metadata"] = (
                self.metadata[index] if real else np.zeros(self.metadata.shape[1], np.float32)
            )
        return example


def load_example(
    collection: Collection, read: ReadOptions, metadata: Encoder | None = None
) -> LoadExample:
    """The collection's `LoadExample`, with its patient metadata encoded when given an encoder."""
    encoded = None if metadata is None else metadata.encode(collection)
    return LoadExample(collection.paths, collection.labels, read, encoded)


def oversample(labels: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Indices in which every class has at least ``ratio`` x the largest class's count.

    A class is repeated whole as often as it fits, and the remainder is drawn without
    replacement, so that copies are spread as evenly as possible (ratio 1.0 gives the
    1:1 balance of random oversampling).
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"oversampling ratio must be in (0, 1], not {ratio}")
    rng = np.random.default_rng(seed)
    counts = np.bincount(labels)
    target = round(ratio * counts.max())
    parts = []
    for c, count in enumerate(counts):
        members = np.flatnonzero(labels == c)
        if count == 0 or count >= target:
            parts.append(members)
            continue
        repeats, remainder = divmod(target, count)
        parts += [np.tile(members, repeats), rng.choice(members, remainder, replace=False)]
    return np.sort(np.concatenate(parts))


def _parallel(ds: grain.MapDataset, read: ReadOptions) -> grain.IterDataset:
    iter_ds = ds.to_iter_dataset(
        grain.ReadOptions(num_threads=read.read_threads, prefetch_buffer_size=4)
    )
    if read.worker_count:
        # Worker processes re-import absl-using modules, which then read flags.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        iter_ds = iter_ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=read.worker_count))
    return iter_ds


def train_dataset(
    collection: Collection,
    read: ReadOptions,
    *,
    batch_size: int,
    seed: int,
    oversample_ratio: float = 0.0,
    num_epochs: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    metadata: Encoder | None = None,
) -> grain.IterDataset:
    """Endless (or ``num_epochs``) shuffled training batches of ``batch_size`` per process.

    Each epoch is shuffled anew from ``seed``; each process takes every
    ``process_count``-th example of the one global order, so hosts never overlap.
    """
    indices = np.arange(len(collection))
    if oversample_ratio:
        indices = oversample(collection.labels, oversample_ratio, seed)
    load = load_example(collection, read, metadata)
    ds = grain.MapDataset.source(indices).shuffle(seed=seed).repeat(num_epochs)
    ds = ds[process_index::process_count].map(load).batch(batch_size, drop_remainder=True)
    return _parallel(ds, read)


def eval_dataset(
    collection: Collection,
    read: ReadOptions,
    *,
    batch_size: int,
    process_index: int = 0,
    process_count: int = 1,
    metadata: Encoder | None = None,
) -> grain.IterDataset:
    """One ordered pass in which every example appears exactly once.

    The pass is padded to a whole number of global batches; padded slots carry
    ``mask`` False and ``index`` -1, and metrics must ignore them.
    """
    global_batch = batch_size * process_count
    padded = -(-len(collection) // global_batch) * global_batch
    load = load_example(collection, read, metadata)
    ds = grain.MapDataset.range(padded)[process_index::process_count].map(load)
    return _parallel(ds.batch(batch_size), read)

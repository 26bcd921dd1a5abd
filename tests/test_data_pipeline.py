import itertools

import numpy as np
import pytest

from skinjax.data import pipeline, sources, splits
from skinjax.data.reading import ReadOptions

READ = ReadOptions.from_config({"image_size": 32})
READ16 = ReadOptions.from_config({"image_size": 16})


@pytest.fixture
def small(small_folder):
    return sources.from_folders(str(small_folder))


def test_oversample_to_one_to_one():
    labels = np.repeat([0, 1, 2], [100, 23, 60])
    indices = pipeline.oversample(labels, 1.0, seed=0)
    assert np.bincount(labels[indices]).tolist() == [100, 100, 100]
    # Whole copies first: every minority example appears 4 or 5 times, never 0 or 9.
    counts = np.bincount(indices[labels[indices] == 1])
    assert set(counts[counts > 0]) <= {4, 5} and np.count_nonzero(counts) == 23


def test_oversampled_epoch_of_real_images_is_balanced(isic2020):
    train = splits.split(sources.from_folders(str(isic2020)), seed=0)["train"]
    ratio = pipeline.oversample(train.labels, 1.0, seed=0)
    assert np.bincount(train.labels[ratio]).tolist() == [1152, 1152]


def test_batches_are_deterministic_for_a_seed(small):
    def first_batches(seed):
        ds = pipeline.train_dataset(small, READ, batch_size=4, seed=seed)
        return [b["index"].tolist() for b in itertools.islice(iter(ds), 8)]

    assert first_batches(1) == first_batches(1)
    assert first_batches(1) != first_batches(2)


def test_epochs_are_reshuffled_and_complete(small):
    ds = pipeline.train_dataset(small, READ, batch_size=4, seed=0, num_epochs=2)
    indices = np.concatenate([b["index"] for b in ds])
    epoch1, epoch2 = indices[:24], indices[24:]
    assert sorted(epoch1) == sorted(epoch2) == list(range(24))
    assert epoch1.tolist() != epoch2.tolist()


def test_batch_content_matches_the_files(small):
    ds = pipeline.train_dataset(small, READ, batch_size=4, seed=0)
    batch = next(iter(ds))
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.uint8
    assert batch["label"].tolist() == small.labels[batch["index"]].tolist()
    from skinjax.data import images

    expected = images.load(small.paths[batch["index"][0]], 32)
    np.testing.assert_array_equal(batch["image"][0], expected)


@pytest.mark.parametrize("worker_count", [0, 2])
def test_restored_iterator_continues_exactly(small, worker_count):
    def make():
        return iter(
            pipeline.train_dataset(
                small,
                ReadOptions.from_config({"image_size": 32, "worker_count": worker_count}),
                batch_size=4,
                seed=5,
            )
        )

    it = make()
    for _ in range(7):  # stop mid-epoch (6 batches an epoch)
        next(it)
    state = it.get_state()
    expected = [next(it)["index"].tolist() for _ in range(5)]
    resumed = make()
    resumed.set_state(state)
    assert [next(resumed)["index"].tolist() for _ in range(5)] == expected


def test_eval_pass_yields_every_example_once(small):
    ds = pipeline.eval_dataset(small.subset(range(23)), READ, batch_size=5)
    batches = list(ds)
    assert len(batches) == 5 and all(b["image"].shape[0] == 5 for b in batches)
    index = np.concatenate([b["index"] for b in batches])
    mask = np.concatenate([b["mask"] for b in batches])
    assert sorted(index[mask]) == list(range(23))
    assert np.all(index[~mask] == -1) and mask.sum() == 23


def test_processes_share_one_order_without_overlap(small):
    per_process = [
        [
            b["index"]
            for b in itertools.islice(
                iter(
                    pipeline.train_dataset(
                        small, READ16, batch_size=3, seed=0, process_index=p, process_count=2
                    )
                ),
                4,
            )
        ]
        for p in range(2)
    ]
    first_epoch = np.concatenate([np.concatenate(per_process[0]), np.concatenate(per_process[1])])
    assert sorted(first_epoch) == list(range(24))
    evals = [
        np.concatenate(
            [
                b["index"]
                for b in pipeline.eval_dataset(
                    small, READ16, batch_size=5, process_index=p, process_count=2
                )
            ]
        )
        for p in range(2)
    ]
    both = np.concatenate(evals)
    assert sorted(both[both >= 0]) == list(range(24))

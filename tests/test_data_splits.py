import numpy as np
import pytest

from skinjax.data import sources, splits
from skinjax.data.sources import DataError


def test_stratified_proportions_within_one_example(isic2020):
    collection = sources.from_folders(str(isic2020))
    parts = splits.split(collection, val_fraction=0.2, test_fraction=0.1, seed=3)
    total = collection.class_counts()
    for name, fraction in (("val", 0.2), ("test", 0.1)):
        assert np.all(np.abs(parts[name].class_counts() - fraction * total) <= 1)
    all_ids = [i for p in parts.values() for i in p.ids]
    assert sorted(all_ids) == sorted(collection.ids)  # a partition: nothing lost or repeated


def test_split_is_stable_for_a_seed_and_changes_with_it():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    a = splits.stratified_split(labels, {"val": 0.2}, seed=7)
    b = splits.stratified_split(labels, {"val": 0.2}, seed=7)
    c = splits.stratified_split(labels, {"val": 0.2}, seed=8)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["val"], c["val"])
    # Pinned so a change of generator or algorithm (a different split on another
    # machine or version) cannot pass unnoticed.
    assert a["val"].tolist() == [
        0,
        6,
        10,
        12,
        20,
        24,
        28,
        37,
        45,
        46,
        53,
        64,
        71,
        75,
        76,
        77,
        83,
        85,
        87,
        89,
    ]


def test_kfold_is_stratified_and_balanced():
    labels = np.repeat([0, 1], [53, 21])
    folds = splits.kfold(labels, 5, seed=0)
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 1
    for c in (0, 1):
        per_fold = np.bincount(folds[labels == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1


def test_kfold_split_partitions_the_rest():
    collection = sources.Collection(
        ("a", "b"), tuple(sources.Example(str(i), f"{i}.jpg", i % 2) for i in range(40))
    )
    vals = [set(splits.split(collection, num_folds=4, fold=k)["val"].ids) for k in range(4)]
    assert set().union(*vals) == set(collection.ids) and sum(map(len, vals)) == 40
    with pytest.raises(DataError, match="fold must be in"):
        splits.split(collection, num_folds=4, fold=4)


def test_fractions_that_leave_no_training_data():
    with pytest.raises(DataError, match="nothing to train on"):
        splits.stratified_split(np.zeros(10, int), {"val": 0.6, "test": 0.4}, 0)


def _random_groups(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and groups of sizes 1-5 (a group shares its label, as a lesion does)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 6, size=n)
    groups = np.repeat(np.arange(n), sizes)
    labels = np.repeat(rng.integers(0, 3, size=n), sizes)
    return labels, groups


def _one_side_per_group(parts: dict[str, np.ndarray], groups: np.ndarray) -> bool:
    side = {}
    for name, idx in parts.items():
        for g in groups[idx]:
            if side.setdefault(g, name) != name:
                return False
    return True


def test_grouped_split_keeps_groups_whole_and_stays_stratified():
    labels, groups = _random_groups(300, seed=0)
    parts = splits.stratified_split(labels, {"test": 0.1, "val": 0.2}, seed=1, groups=groups)
    assert _one_side_per_group(parts, groups)
    assert sorted(np.concatenate(list(parts.values()))) == list(range(len(labels)))
    for name, fraction in (("val", 0.2), ("test", 0.1)):
        counts = np.bincount(labels[parts[name]], minlength=3)
        assert np.all(np.abs(counts - fraction * np.bincount(labels)) <= 5)  # one group
    again = splits.stratified_split(labels, {"test": 0.1, "val": 0.2}, seed=1, groups=groups)
    assert all(np.array_equal(parts[k], again[k]) for k in parts)


def test_grouped_kfold_keeps_groups_whole_and_balanced():
    labels, groups = _random_groups(200, seed=2)
    folds = splits.kfold(labels, 5, seed=0, groups=groups)
    assert all(len(set(folds[groups == g])) == 1 for g in np.unique(groups))
    sizes = np.bincount(folds)
    assert sizes.max() - sizes.min() <= 10


def _write_csv(root, ham10000, rows: list[tuple[str, str, str, str]]):
    (root / "images").mkdir(parents=True)
    lines = ["image_id,dx,lesion_id,split"]
    for image_id, dx, lesion, split in rows:
        (root / "images" / f"{image_id}.jpg").symlink_to(ham10000 / "images" / f"{image_id}.jpg")
        lines.append(f"{image_id},{dx},{lesion},{split}")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")


def _data(root, **overrides) -> dict:
    data = dict(
        source="csv",
        dir=str(root),
        csv="labels.csv",
        id_column="image_id",
        label_column="dx",
        path_template="images/{id}.jpg",
        classes=("nv", "mel", "bkl"),
    )
    data.update(overrides)
    return data


def test_lesion_id_column_keeps_a_lesions_images_on_one_side(tmp_path, ham10000):
    import csv

    with open(ham10000 / "labels.csv") as f:
        ham = [r for r in csv.DictReader(f) if r["dx"] in ("nv", "mel", "bkl")][:40]
    # Pretend every four consecutive images show one lesion.
    rows = [(r["image_id"], r["dx"], f"L{k // 4}", "") for k, r in enumerate(ham)]
    _write_csv(tmp_path, ham10000, rows)
    from skinjax.data import prepare

    for seed in range(3):
        parts = prepare.prepare(
            _data(tmp_path, group_columns=("lesion_id",), val_fraction=0.3, split_seed=seed)
        ).parts
        lesion = {image_id: les for image_id, _, les, _ in rows}
        train = {lesion[i] for i in parts["train"].ids}
        val = {lesion[i] for i in parts["val"].ids}
        assert train and val and not train & val


def test_published_split_leak_error_drop_keep(tmp_path, ham10000):
    import csv

    with open(ham10000 / "labels.csv") as f:
        ham = [r for r in csv.DictReader(f) if r["dx"] == "nv"][:6]
    split = ["train", "train", "val", "train", "val", "val"]
    lesion = ["A", "B", "A", "C", "D", "E"]  # A is on both sides
    rows = [(r["image_id"], "nv", les, s) for r, les, s in zip(ham, lesion, split, strict=True)]
    _write_csv(tmp_path, ham10000, rows)
    collection = sources.load(_data(tmp_path, split_column="split", group_columns=("lesion_id",)))
    groups = splits.group_ids(collection, np.zeros(0, int), np.zeros(0, int))
    leak = [ham[0]["image_id"], ham[2]["image_id"]]
    assert splits.published_leaks(collection, groups) == [leak]
    with pytest.raises(DataError, match=f"1 group.*{leak[0]}, {leak[1]}"):
        splits.split(collection, groups=groups, on_split_leak="error")
    dropped = splits.split(collection, groups=groups, on_split_leak="drop")
    assert leak[0] not in dropped["train"].ids and leak[1] in dropped["val"].ids
    kept = splits.split(collection, groups=groups, on_split_leak="keep")
    assert leak[0] in kept["train"].ids and len(kept["train"]) + len(kept["val"]) == 6
    for unsplit in (collection, sources.Collection(collection.classes, ())):
        with pytest.raises(DataError, match="on_split_leak must be"):
            splits.split(unsplit, groups=groups[: len(unsplit)], on_split_leak="warn")


def test_group_columns_need_a_csv_collection(isic2020):
    with pytest.raises(DataError, match="group_columns needs a CSV"):
        sources.load(dict(source="folders", dir=str(isic2020), group_columns=("lesion_id",)))

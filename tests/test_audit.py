import csv
import os
import shutil

from PIL import Image

from skinjax.data import audit, sources


def test_audit_finds_exact_and_near_copies_across_collections(tmp_path, ham10000):
    files = sorted(os.listdir(ham10000 / "images"))[:10]
    for k, name in enumerate(files[:6]):  # a training collection: 3 + 3 distinct lesions
        folder = tmp_path / "train" / ("benign" if k < 3 else "malignant")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(ham10000 / "images" / name)
    test = tmp_path / "test"
    for name in ("benign", "malignant"):
        (test / name).mkdir(parents=True)
    shutil.copy(ham10000 / "images" / files[0], test / "benign" / "exact.jpg")
    with Image.open(ham10000 / "images" / files[4]) as image:  # a malignant one, as benign
        image.transpose(Image.FLIP_LEFT_RIGHT).save(test / "benign" / "flipped.jpg", quality=70)
    for name in files[6:10]:
        (test / "malignant" / name).symlink_to(ham10000 / "images" / name)
    collections = {n: sources.from_folders(str(tmp_path / n)) for n in ("train", "test")}

    summary = audit.audit(collections, str(tmp_path / "out"))

    with open(tmp_path / "out" / "pairs.csv") as f:
        pairs = {(r["kind"], r["id_a"], r["id_b"]) for r in csv.DictReader(f)}
    stem = os.path.splitext
    assert pairs == {
        ("exact", f"benign/{stem(files[0])[0]}", "benign/exact"),
        ("near", f"malignant/{stem(files[4])[0]}", "benign/flipped"),
    }
    cross = next(line for line in summary.splitlines() if line.startswith("train x test"))
    assert cross.split()[3:] == ["12", "1", "1", "4", "10", "1"]  # 1 exact, 1 near, 1 conflict
    assert (tmp_path / "out" / "near_pairs.png").stat().st_size > 1000

r"""Audits one or several collections for exact and near-duplicate images.

    python scripts/audit_data.py --out runs/audit isic2020-part isic2017 ham10000
    python scripts/audit_data.py --out runs/audit_mine path/to/folder_per_class

A collection is a folder with one sub-folder per class, or one of the names of the
collections in ../shared/data (isic2020-part, isic2017, ham10000). Prints a summary
(duplicate pairs within and across collections, label conflicts between copies, and
published splits that put one picture or lesion on both sides) and writes it to
OUT/summary.txt, with every pair in OUT/pairs.csv and contact sheets of a sample of
confirmed pairs (OUT/near_pairs.png) and of pairs just below the threshold
(OUT/borderline_pairs.png).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags

from skinjax import config as base_config
from skinjax.data import audit, sources

_OUT = flags.DEFINE_string("out", None, "Directory for summary.txt, pairs.csv and the sheets.")
flags.mark_flag_as_required("out")

_SHARED = "../shared/data"
COLLECTIONS = {
    "isic2020-part": dict(source="folders", dir=base_config.ISIC2020_TRAIN),
    "isic2017": dict(
        source="csv",
        dir=base_config.ISIC2017,
        csv="labels.csv",
        id_column="image_id",
        label_column="diagnosis",
        path_column="file",
        split_column="split",
        classes=("nevus", "melanoma", "seborrheic_keratosis"),
    ),
    "ham10000": dict(
        source="csv",
        dir=f"{_SHARED}/ham10000",
        csv="labels.csv",
        id_column="image_id",
        label_column="dx",
        path_column="file",
        classes=("nv", "mel", "bkl", "bcc", "akiec", "vasc", "df"),
        group_columns=("lesion_id",),
    ),
}


def main(argv):
    if len(argv) < 2:
        raise app.UsageError(f"name at least one collection (a folder, or {sorted(COLLECTIONS)})")
    collections = {
        name: sources.load(COLLECTIONS.get(name) or dict(source="folders", dir=name))
        for name in argv[1:]
    }
    start = time.perf_counter()
    summary = audit.audit(collections, _OUT.value)
    summary += f"\n\n{time.perf_counter() - start:.1f} s"
    with open(os.path.join(_OUT.value, "summary.txt"), "w") as f:
        f.write(summary + "\n")
    print(summary)


if __name__ == "__main__":
    app.run(main)

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

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

import os
import time

from absl import app, flags

from skinjax import cli
from skinjax import config as base_config
from skinjax.data import audit, sources

_OUT = flags.DEFINE_string("out", None, "Directory for summary.txt, pairs.csv and the sheets.")
flags.mark_flag_as_required("out")
CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


def _config(name: str):
    """The module of ``configs/<name>.py``, loaded by path."""
    return base_config.load_file(os.path.join(CONFIGS, f"{name}.py"))


COLLECTIONS = {  # the collections in ../shared/data, as the configs read them
    "isic2020-part": lambda: dict(source="folders", dir=base_config.ISIC2020_TRAIN),
    "isic2017": lambda: _config("cam_crop").ISIC2017,
    "ham10000": lambda: _config("ham10000").get_config().data.to_dict(),
}


def main(argv):
    if len(argv) < 2:
        raise app.UsageError(f"name at least one collection (a folder, or {sorted(COLLECTIONS)})")
    collections = {
        name: sources.load(
            COLLECTIONS[name]() if name in COLLECTIONS else dict(source="folders", dir=name)
        )
        for name in argv[1:]
    }
    start = time.perf_counter()
    summary = audit.audit(collections, _OUT.value)
    summary += f"\n\n{time.perf_counter() - start:.1f} s"
    with open(os.path.join(_OUT.value, "summary.txt"), "w") as f:
        f.write(summary + "\n")
    print(summary)


if __name__ == "__main__":
    cli.run(main)

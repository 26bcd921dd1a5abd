r"""Prints a markdown table of evaluations: balanced accuracy, recall per class, mean AUC.

    python scripts/table.py runs/ham/lite0/eval_val runs/ham/lite0/eval_val_noreweight \
        runs/ham/ensemble [--labels "Lite0,Lite0 not reweighted,ensemble"] [--out table.md]

Each argument is a metrics.json written by scripts/evaluate.py, the directory holding
one (its --out), or a work directory evaluated with the defaults (W/eval_val). A row's
label says by default what it evaluated (members, metadata, reweighting, test-time
views), from its metrics file. Rows that scored other images than the first one
(another split, collection or class list) are an error.
"""

from skinjax import host_memory

if __name__ == "__main__":  # first of all: before the imports below, a restart is cheap
    host_memory.restart_with_fast_malloc()

from absl import app, flags

from skinjax import cli
from skinjax.apps import table

_LABELS = flags.DEFINE_list("labels", None, "Row labels (default: what each row evaluated).")
_OUT = flags.DEFINE_string("out", None, "Markdown file to write (default: print it).")


def main(argv):
    paths = argv[1:]
    if not paths:
        raise app.UsageError("name the evaluations to tabulate (metrics.json files or folders)")
    text = table.markdown([table.read(p) for p in paths], _LABELS.value)
    if _OUT.value:
        with open(_OUT.value, "w") as f:
            f.write(text)
    print(text, end="")


if __name__ == "__main__":
    cli.run(main)

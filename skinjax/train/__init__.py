"""Training: a run built from its config (build.py), pure steps (classifier.py, cyclegan.py),
optimisers (optim.py), checkpoints, the one loop (loop.py), a trained run (trained.py)."""

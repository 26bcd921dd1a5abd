"""Training: pure steps (classifier.py), optimisers (optim.py), the one loop (loop.py)."""

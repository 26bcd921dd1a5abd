"""Developer tools: throughput benchmarks, the PyTorch peer they compare with, scalars."""

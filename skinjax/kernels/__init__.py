"""Native CPU kernels that XLA:CPU lacks, behind functions that fall back to `jax.lax`."""

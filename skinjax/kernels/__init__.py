"""The ops models call (`ops`), each in the form the platform being traced runs fastest:
oneDNN's primitives on CPU (`onednn`, `conv`, `batch_norm`, `pool`), hand-written XLA
forms (`xla`), or plain `jax.lax`; and FLOP counts that see oneDNN's work (`flops`)."""

"""Layer 5: the thin CLI. Each module here defines ``register(app)`` and is found automatically."""

"""Layer 3: the one training engine, gradient transforms, ensembles, checkpoints, monitors."""

"""Layer 1: configuration, errors, seeding, progress, paths."""

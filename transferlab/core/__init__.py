"""Layer 1: configuration, errors, devices, progress, paths, memory."""

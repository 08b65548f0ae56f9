"""Weak-to-strong generalization (Burns et al. 2023): floor, ceiling and students over losses and seeds."""

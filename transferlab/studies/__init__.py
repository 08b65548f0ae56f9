"""Layer 4: one folder per phenomenon (config, run, analysis, report)."""

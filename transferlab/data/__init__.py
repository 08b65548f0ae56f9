"""Layer 2: algorithmic tasks, corpora, tokenizers, classification tasks."""

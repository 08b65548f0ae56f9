"""Layer 2: models (MLP, small transformers, Hugging Face adapters)."""

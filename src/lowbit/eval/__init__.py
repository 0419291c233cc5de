"""Quality evaluation: perplexity and KL divergence (llama.cpp-compatible)."""

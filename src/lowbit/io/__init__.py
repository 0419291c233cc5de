"""Model file readers: GGUF (via the `gguf` package) and Hugging Face safetensors directories."""


class ModelFileError(ValueError):
    """A model file is missing, truncated, or describes something lowbit cannot run; the message names it."""

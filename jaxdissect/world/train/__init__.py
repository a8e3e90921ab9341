"""Training code for the shipped world models (used by ``scripts/``, not by the library)."""

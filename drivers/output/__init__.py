"""Output drivers."""

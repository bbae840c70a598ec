"""Audio drivers."""

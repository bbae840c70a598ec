"""Control drivers."""

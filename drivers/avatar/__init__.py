"""Avatar drivers."""

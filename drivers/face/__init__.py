"""Face drivers."""

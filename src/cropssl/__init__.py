"""cropssl."""

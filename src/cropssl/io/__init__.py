"""Everything that writes files safely (atomic outputs, clear write errors)."""

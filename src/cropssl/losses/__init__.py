"""Losses: one pure ``nn.Module`` per SSL objective (no Lightning inside)."""

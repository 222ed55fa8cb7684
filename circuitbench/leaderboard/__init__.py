"""Leaderboard: submission format and validation (the static site is not built yet)."""

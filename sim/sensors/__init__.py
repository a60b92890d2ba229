"""Simulated sensors of the built-in simulator."""

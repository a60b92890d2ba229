"""Shipped scenario files (YAML) and the script that writes the benchmark routes."""

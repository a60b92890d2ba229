"""Simulators: built-in and CARLA backends, maps, routes, expert driver, driving score."""

"""What goes wrong talking to a CARLA server, each naming what the user must fix."""

from __future__ import annotations

from sim.protocol import SimulatorError


class CarlaError(SimulatorError):
    """The CARLA server or the backend failed; the message names host, port, version or sensor."""


class CarlaConnectionError(CarlaError):
    """No server answered, or it stopped answering."""


class CarlaVersionError(CarlaError):
    """The client package and the server are different CARLA versions (or unsupported ones)."""


class CarlaTownError(CarlaError):
    """The scenario's town is not on the server and is not an OpenDRIVE file we have."""


class CarlaSensorTimeout(CarlaError):
    """A sensor delivered no data for a tick within the timeout."""

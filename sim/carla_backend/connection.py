"""Connecting to a CARLA server: timeout, retries and the client/server version check.

CARLA's RPC protocol changes between releases, and a mismatched client fails late and
obscurely (or crashes the server), so both versions are checked before anything else.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import carla

from sim.carla_backend.errors import CarlaConnectionError, CarlaVersionError

log = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("0.9.15", "0.9.16")

ClientFactory = Callable[[str, int], Any]


@dataclass(frozen=True)
class CarlaEndpoint:
    """Where the server is and how patient to be with it."""

    host: str = "127.0.0.1"
    port: int = 2000
    timeout_s: float = 10.0  # per RPC call, world.tick() included
    retries: int = 3
    traffic_manager_port: int = 8000

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("CARLA host must not be empty")
        if not 0 < self.port < 65536 or not 0 < self.traffic_manager_port < 65536:
            raise ValueError(f"CARLA ports must be in 1..65535 (port {self.port}, traffic manager "
                             f"{self.traffic_manager_port})")
        if not self.timeout_s > 0 or self.retries < 1:
            raise ValueError(f"timeout_s={self.timeout_s} must be > 0 and retries={self.retries} >= 1")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def release(version: str) -> str:
    """'0.9.16' from '0.9.16', '0.9.16-dirty' or '0.9.16-1-g1234abc' (server builds)."""
    match = re.match(r"\d+\.\d+\.\d+", version.strip())
    return match.group(0) if match else version.strip()


def check_versions(client_version: str, server_version: str, address: str) -> None:
    client, server = release(client_version), release(server_version)
    if client != server:
        raise CarlaVersionError(
            f"the carla client package is {client_version} but the server at {address} runs {server_version}: "
            f"install the matching client (pip install carla=={server}, or the wheel in the server's "
            f"PythonAPI/carla/dist); drivestack supports {' and '.join(SUPPORTED_VERSIONS)}")
    if client not in SUPPORTED_VERSIONS:
        raise CarlaVersionError(f"CARLA {server_version} at {address} is not supported: drivestack supports "
                                f"{' and '.join(SUPPORTED_VERSIONS)}")


def connect(endpoint: CarlaEndpoint, client_factory: ClientFactory | None = None,
            sleep: Callable[[float], None] | None = None) -> Any:
    """A ``carla.Client`` talking to a server of the same, supported version.

    The client object connects lazily: the first RPC (``get_server_version``) is the
    real test, repeated ``retries`` times with a growing pause for a server that is
    still starting.
    """
    factory = client_factory or carla.Client
    last_error = ""
    for attempt in range(1, endpoint.retries + 1):
        client = factory(endpoint.host, endpoint.port)
        client.set_timeout(endpoint.timeout_s)
        try:
            server_version = client.get_server_version()
        except RuntimeError as exc:
            last_error = str(exc)
            log.warning("CARLA at %s: attempt %d/%d failed: %s", endpoint.address, attempt, endpoint.retries, exc)
            if attempt < endpoint.retries:
                (sleep or time.sleep)(min(2.0 ** (attempt - 1), 10.0))
            continue
        check_versions(client.get_client_version(), server_version, endpoint.address)
        log.info("connected to CARLA %s at %s", server_version, endpoint.address)
        return client
    raise CarlaConnectionError(
        f"no CARLA server answered at {endpoint.address} ({endpoint.retries} tries, {endpoint.timeout_s:g} s each; "
        f"last error: {last_error}). Start one (README: Running on a CARLA server) or give --host/--port")

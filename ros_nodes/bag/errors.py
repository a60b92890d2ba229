"""Errors a user can cause, and problems found in a bag that do not stop reading it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class BagError(Exception):
    """A bag cannot be written, read or recovered; the message says which and why."""


@dataclass(frozen=True)
class BagProblem:
    """Part of a bag that could not be read; the rest of the bag still is."""

    path: Path
    what: str
    topic: str | None = None
    stamp_ns: int | None = None

    def __str__(self) -> str:
        where = f" {self.topic}" if self.topic else ""
        when = f" at t={self.stamp_ns / 1e9:.9f} s ({self.stamp_ns} ns)" if self.stamp_ns is not None else ""
        return f"{self.path.name}:{where}{when}: {self.what}" if where or when else f"{self.path.name}: {self.what}"

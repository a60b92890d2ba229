"""Small numpy helpers for the per-step hot path."""

from __future__ import annotations

import math

import numpy as np


def clip(x, low, high):
    """np.clip without its dispatch overhead (called several times per simulator step)."""
    return np.minimum(np.maximum(x, low), high)


def wrap(angle: np.ndarray) -> np.ndarray:
    """Angles wrapped into [-pi, pi)."""
    return (angle + math.pi) % (2 * math.pi) - math.pi

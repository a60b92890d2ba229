"""What happens to the RGB image after rasterisation, in numpy: effects that need
per-pixel depth (fog, wet-road sheen, the ego's headlight beam, rain streaks) and the
camera sensor (exposure, vignetting, shot and read noise, 8-bit quantisation).

The software rasteriser has no fog and only per-vertex lighting, so these run here on
the label pass's exact depth instead. Only the RGB image is touched: depth, semantic
and instance images stay exact. Images are float32 RGB in [0, 1] until
:meth:`SensorModel.finish` quantises them. Each camera owns its generator, so the
same seed gives byte-identical images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from sim.render.weather import WeatherPreset

SKY_DEPTH_M = 1000.0  # depth written where nothing is drawn (CARLA's far plane)


@dataclass(frozen=True)
class SensorNoise:
    """A small CMOS sensor: noise standard deviations in units of full scale."""

    read_noise: float = 0.006
    shot_noise: float = 0.012  # standard deviation at full-scale signal; scales with sqrt(signal)
    vignetting: float = 0.18  # brightness lost in the image corners

    def __post_init__(self) -> None:
        if min(self.read_noise, self.shot_noise, self.vignetting) < 0 or self.vignetting >= 1:
            raise ValueError("SensorNoise: noise >= 0 and vignetting in [0, 1) required")


class SensorModel:
    """One camera's sensor: exposure gain, vignetting, noise, 8-bit output.

    Drawing fresh Gaussian noise for every pixel costs more than rendering the frame,
    so each frame reads a window at a random offset of a bank drawn once per seed:
    consecutive frames get different, still seeded, noise.
    """

    def __init__(self, width_px: int, height_px: int, rng: np.random.Generator,
                 noise: SensorNoise = SensorNoise()) -> None:
        self.noise = noise
        self._shape = (3, height_px, width_px)
        self._size = 3 * width_px * height_px
        v, u = np.mgrid[0:height_px, 0:width_px].astype(np.float32)
        corner2 = (width_px / 2) ** 2 + (height_px / 2) ** 2
        r2 = ((u + 0.5 - width_px / 2) ** 2 + (v + 0.5 - height_px / 2) ** 2) / corner2
        # Quadratic falloff, normalised so the corners lose exactly ``vignetting``.
        self._vignette = (1.0 - noise.vignetting * r2).astype(np.float32)
        self.reseed(rng)

    def reseed(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._bank = rng.standard_normal(2 * self._size, dtype=np.float32)

    def finish(self, planes: np.ndarray, exposure_gain: float) -> np.ndarray:
        """(3, H, W) float32 RGB planes (linear, [0, 1]) -> (H, W, 3) uint8 RGB with the
        sensor's gain and noise. Works in 8-bit units throughout (fewer passes)."""
        signal = planes * (self._vignette * np.float32(255.0 * exposure_gain))
        np.clip(signal, 0.0, 255.0, out=signal)
        n = self.noise
        if n.read_noise > 0 or n.shot_noise > 0:
            # Var = read^2 + shot^2 * signal (Poisson-like photon noise at full scale).
            sigma = signal * np.float32(255.0 * n.shot_noise ** 2)
            sigma += np.float32((255.0 * n.read_noise) ** 2)
            np.sqrt(sigma, out=sigma)
            start = int(self.rng.integers(0, self._size))
            sigma *= self._bank[start:start + self._size].reshape(self._shape)
            signal += sigma
        signal += 0.5  # round, not truncate
        np.clip(signal, 0.0, 255.0, out=signal)
        return cv2.merge(list(signal.astype(np.uint8)))


@dataclass(frozen=True)
class PixelGeometry:
    """Where each pixel of one frame looks and what it hits, for deferred effects.

    ``ray_world`` holds each pixel's ray in the map frame as three (H, W) planes,
    scaled so its component along the optical axis is 1 (``camera + depth * ray`` is
    the surface point); it may be None when the preset needs no wet sheen and no
    headlights. Images here are (3, H, W) float32 planes: per-channel operations on
    contiguous planes are several times faster in numpy than on (H, W, 3).
    """

    depth_m: np.ndarray  # (H, W) float32
    sky: np.ndarray  # (H, W) bool, nothing drawn
    ground: np.ndarray  # (H, W) bool, road-like surfaces (road, sidewalk, lines, terrain)
    ray_world: np.ndarray | None  # (3, H, W) float32
    camera_world_m: np.ndarray  # (3,)


def apply_weather(planes: np.ndarray, pixels: PixelGeometry, preset: WeatherPreset,
                  ego_pose: tuple[float, float, float, float], rng: np.random.Generator) -> None:
    """Wet sheen, the ego's headlights, fog and rain streaks, in place on ``planes``.

    ``ego_pose`` is (x_m, y_m, yaw_rad, length_m) of the ego in the map frame.
    """
    if (preset.wetness > 0 or preset.headlights_on) and pixels.ground.any():
        # Both touch only the ground: work on the rows that show some.
        rows = np.flatnonzero(pixels.ground.any(axis=1))
        band = slice(rows[0], rows[-1] + 1)
        ground = PixelGeometry(pixels.depth_m[band], pixels.sky[band], pixels.ground[band],
                               pixels.ray_world[:, band], pixels.camera_world_m)
        if preset.wetness > 0:
            _wet_sheen(planes[:, band], ground, preset)
        if preset.headlights_on:
            _headlight_beam(planes[:, band], ground, preset, ego_pose)
    if preset.fog_density_per_m > 0:
        _fog(planes, pixels, preset)
    if preset.rain_streaks > 0:
        _rain_streaks(planes, preset, rng)


def _blend_towards(planes: np.ndarray, weight: np.ndarray, rgb: tuple[float, float, float]) -> None:
    """planes += weight * (rgb - planes), channel by channel."""
    keep = 1.0 - weight
    for c in range(3):
        planes[c] *= keep
        planes[c] += weight * np.float32(rgb[c])


def _wet_sheen(planes: np.ndarray, pixels: PixelGeometry, preset: WeatherPreset) -> None:
    """A wet road mirrors the sky at grazing angles (Schlick's Fresnel term)."""
    rx, ry, rz = pixels.ray_world
    cos_incidence = np.abs(rz) / np.sqrt(rx * rx + ry * ry + rz * rz)
    grazing = 1.0 - cos_incidence
    grazing *= grazing * grazing * grazing * grazing  # (1 - cos)^5 without pow
    weight = (0.02 + 0.98 * grazing) * np.float32(0.8 * preset.wetness)
    weight *= pixels.ground
    _blend_towards(planes, weight, preset.sky_horizon_rgb)


HEADLIGHT_RGB = (1.0, 0.95, 0.86)  # halogen-warm white
HEADLIGHT_PEAK = 0.9  # illuminance at the beam's core a few metres ahead; the noon sun is ~1


def _headlight_beam(planes: np.ndarray, pixels: PixelGeometry, preset: WeatherPreset,
                    ego_pose: tuple[float, float, float, float]) -> None:
    """Light the ground ahead of the ego as its low beams would: the surface's albedo
    (the rendered colour over the scene's ground lighting) times the beam's light,
    added to the image. Strong at night, barely visible by day."""
    x_m, y_m, yaw_rad, length_m = ego_pose
    rx, ry, _ = pixels.ray_world
    cam = pixels.camera_world_m
    dx = pixels.depth_m * rx + np.float32(cam[0] - x_m)
    dy = pixels.depth_m * ry + np.float32(cam[1] - y_m)
    c, s = np.float32(math.cos(yaw_rad)), np.float32(math.sin(yaw_rad))
    ahead = dx * c + dy * s - np.float32(length_m / 2)
    lateral = dy * c - dx * s
    np.clip(ahead, 0.0, 80.0, out=ahead)
    # A low beam: a cone widening with distance, dimming with the square of distance
    # and fading in over the first metres in front of the bumper.
    width = ahead * np.float32(0.35) + np.float32(0.8)
    cone = np.exp(-(lateral / width) ** 2)
    falloff = np.minimum(ahead * np.float32(0.5), 1.0) / (1.0 + (ahead * np.float32(1 / 14.0)) ** 2)
    beam = cone * falloff * np.float32(HEADLIGHT_PEAK)
    beam *= pixels.ground
    sun_up = max(math.sin(preset.sun_elevation_rad), 0.0)
    ground_light = np.maximum(np.asarray(preset.ambient_rgb) + np.asarray(preset.sun_rgb) * sun_up, 0.02)
    for channel in range(3):
        planes[channel] *= 1.0 + beam * np.float32(HEADLIGHT_RGB[channel] / ground_light[channel])


def _fog(planes: np.ndarray, pixels: PixelGeometry, preset: WeatherPreset) -> None:
    """Exponential fog on everything drawn; the sky colours of a preset already
    include its haze."""
    opacity = np.exp(pixels.depth_m * np.float32(-preset.fog_density_per_m))
    np.subtract(1.0, opacity, out=opacity)
    opacity[pixels.sky] = 0.0
    _blend_towards(planes, opacity, preset.fog_rgb)


def _rain_streaks(planes: np.ndarray, preset: WeatherPreset, rng: np.random.Generator) -> None:
    """Short bright slanted streaks, a few pixels long, blended in."""
    h, w = planes.shape[1:]
    count = int(preset.rain_streaks * w * h / 600)
    if count == 0:
        return
    start = rng.uniform((0, 0), (w, h), size=(count, 2))
    length = rng.uniform(0.03, 0.08, size=count) * h
    end = start + np.column_stack([0.25 * length, length])
    mask = np.zeros((h, w), np.float32)
    lines = np.stack([start, end], axis=1).round().astype(np.int32)
    cv2.polylines(mask, list(lines), isClosed=False, color=0.22, thickness=1, lineType=cv2.LINE_8)
    _blend_towards(planes, mask, (0.85, 0.85, 0.85))

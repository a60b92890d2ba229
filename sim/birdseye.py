"""Bird's-eye PNG of an episode: map, route, driven trajectory and infractions."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on CI or servers
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from drivestack.schema import EpisodeResult, InfractionKind, Route  # noqa: E402
from sim.road_map import RoadMap  # noqa: E402

_INFRACTION_STYLE = {
    InfractionKind.COLLISION_PEDESTRIAN: ("X", "crimson"),
    InfractionKind.COLLISION_VEHICLE: ("X", "red"),
    InfractionKind.COLLISION_STATIC: ("X", "darkred"),
    InfractionKind.RED_LIGHT: ("s", "orangered"),
    InfractionKind.STOP_SIGN: ("s", "orange"),
    InfractionKind.ROUTE_DEVIATION: ("D", "purple"),
    InfractionKind.AGENT_BLOCKED: ("P", "black"),
}


def draw_map(ax, road_map: RoadMap) -> None:
    """Lanes as grey bands of their width, junction connectors lighter, stop lines white."""
    scale = _points_per_metre(ax, road_map)
    for seg in road_map.lanes:
        colour = "#c9c9c9" if seg.in_junction else "#9a9a9a"
        ax.plot(seg.points_xy[:, 0], seg.points_xy[:, 1], color=colour, linewidth=seg.width_m * scale,
                solid_capstyle="butt", zorder=1)
    for seg in road_map.lanes:
        if not seg.in_junction:
            ax.plot(seg.points_xy[:, 0], seg.points_xy[:, 1], color="white", linewidth=0.4,
                    linestyle=(0, (4, 6)), zorder=2)
    for group in road_map.signals:
        for sl in group.stop_lines:
            ax.plot([sl.p0[0], sl.p1[0]], [sl.p0[1], sl.p1[1]], color="white", linewidth=1.5, zorder=3)
        ax.plot(group.x_m, group.y_m, marker="o", color="gold", markeredgecolor="black", markersize=4, zorder=4)


def _points_per_metre(ax, road_map: RoadMap) -> float:
    x0, y0, x1, y1 = road_map.bounds_xy
    span = max(x1 - x0, y1 - y0, 1.0) + 40.0
    width_pt = ax.figure.get_figwidth() * 72 * ax.get_position().width
    return width_pt / span


def save_birdseye(path: str | Path, road_map: RoadMap, route: Route, trajectory: np.ndarray,
                  result: EpisodeResult) -> Path:
    """``trajectory`` columns: time_s, x_m, y_m, yaw_rad, speed_mps."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(10, 10), dpi=110)
    x0, y0, x1, y1 = road_map.bounds_xy
    ax.set_xlim(x0 - 20, x1 + 20)
    ax.set_ylim(y0 - 20, y1 + 20)
    ax.set_aspect("equal")
    ax.set_facecolor("#e8efe3")
    draw_map(ax, road_map)
    rx = [w.x_m for w in route.waypoints]
    ry = [w.y_m for w in route.waypoints]
    ax.plot(rx, ry, color="royalblue", linewidth=5, alpha=0.35, label="route", zorder=5)
    if len(trajectory) > 1:
        pts = trajectory[:, 1:3]
        segments = np.stack([pts[:-1], pts[1:]], axis=1)
        lines = LineCollection(segments, cmap="viridis", linewidths=2, zorder=6)
        lines.set_array(trajectory[1:, 4])
        ax.add_collection(lines)
        fig.colorbar(lines, ax=ax, fraction=0.035, pad=0.02, label="ego speed (m/s)")
    ax.plot(rx[0], ry[0], marker="^", color="green", markersize=10, label="start", zorder=7)
    ax.plot(rx[-1], ry[-1], marker="*", color="black", markersize=13, label="goal", zorder=7)
    shown = set()
    for event in result.infractions:
        marker, colour = _INFRACTION_STYLE.get(event.kind, ("o", "magenta"))
        label = event.kind.value if event.kind not in shown else None
        shown.add(event.kind)
        ax.plot(event.x_m, event.y_m, marker=marker, color=colour, markersize=11, markeredgecolor="black",
                linestyle="none", label=label, zorder=8)
    ax.set_title(f"{result.scenario} on {result.town} (seed {result.seed}): DS {result.driving_score:.1f}, "
                 f"RC {result.route_completion_pct:.1f} %, IS {result.infraction_penalty:.2f}, "
                 f"{result.status.value}", fontsize=10)
    ax.set_xlabel("x (m, map frame)")
    ax.set_ylabel("y (m, map frame)")
    ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path

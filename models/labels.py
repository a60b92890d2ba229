"""What the perception networks predict, as indices: the label spaces of the heads.

- Detection: vehicles, pedestrians and traffic lights split by the state they show
  (a light that is off is not a detection target).
- Segmentation: the schema's semantic classes (``SEMANTIC_CLASSES``) in table order;
  ``SEMANTIC_TO_TRAIN`` maps a class id (CARLA's tag numbering, with gaps) to its index.
- Lanes: the four boundaries CULane counts, by their position from the ego lane.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from drivestack.schema import SEMANTIC_CLASSES, ObjectClass, TrafficLightState

DETECTION_CLASSES: tuple[str, ...] = (
    "vehicle", "pedestrian", "traffic_light_red", "traffic_light_yellow", "traffic_light_green")
_LIGHT_CLASS = {TrafficLightState.RED: 2, TrafficLightState.YELLOW: 3, TrafficLightState.GREEN: 4}


def detection_class(object_class: ObjectClass, light_state: TrafficLightState | None) -> int | None:
    """The detection head's class index of a labelled object; None when it is no target."""
    if object_class is ObjectClass.VEHICLE:
        return 0
    if object_class is ObjectClass.PEDESTRIAN:
        return 1
    return _LIGHT_CLASS.get(light_state) if light_state is not None else None


SEGMENTATION_CLASSES: tuple[str, ...] = tuple(c.name for c in SEMANTIC_CLASSES)
IGNORE_INDEX = 255  # a pixel whose class id is not in the table: excluded from loss and metric
SEMANTIC_TO_TRAIN = np.full(256, IGNORE_INDEX, np.uint8)
for _index, _cls in enumerate(SEMANTIC_CLASSES):
    SEMANTIC_TO_TRAIN[_cls.class_id] = _index
TRAIN_TO_SEMANTIC = np.array([c.class_id for c in SEMANTIC_CLASSES], np.uint8)
SEGMENTATION_PALETTE = np.array([c.colour_rgb for c in SEMANTIC_CLASSES], np.uint8)

# LaneBoundary.position of the lane head's slots: left neighbour's far edge, ego lane's
# left and right edges, right neighbour's far edge.
LANE_POSITIONS: tuple[int, ...] = (-2, -1, 1, 2)


@dataclass(eq=False)
class PerceptionFrame:
    """One camera frame with its labels, in image pixels (u right, v down).

    ``boxes_px`` rows are (u_min, v_min, u_max, v_max); ``box_classes`` index
    ``DETECTION_CLASSES``; ``box_ignore`` marks labelled objects that the metric and the
    loss must neither reward nor punish (too small or mostly hidden). ``semantic`` holds
    training indices (``SEMANTIC_TO_TRAIN`` applied, ``IGNORE_INDEX`` for unknown ids).
    ``lanes_px`` maps a ``LANE_POSITIONS`` entry to its (K, 2) pixel polyline, ordered
    from the bottom of the image up; ``lanes_labelled`` tells an empty dict of a bag without
    lane labels (the lane loss skips the frame) from a frame with no lane in view.
    """

    image: np.ndarray  # (H, W, 3) uint8 RGB
    semantic: np.ndarray | None  # (H, W) uint8
    boxes_px: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    box_classes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    box_ignore: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    lanes_px: dict[int, np.ndarray] = field(default_factory=dict)
    stamp_ns: int = 0
    source: str = ""  # bag path and frame, for error messages and debugging
    lanes_labelled: bool = True  # False: the bag has no lane labels (not "no lane in view")

    @property
    def shape(self) -> tuple[int, int]:
        return self.image.shape[:2]

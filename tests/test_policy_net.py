"""The behaviour-cloning policy net (models/policy_net.py) and its runtime wrapper
(models/driving_policy.py).

The golden outputs below were computed once from a seeded, untrained net; a change to the
architecture or its initialisation changes them on purpose: check the failure message's
values and paste them here deliberately.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from drivestack.schema import RoadOption  # noqa: E402
from models.driving_policy import DrivingPolicy, PolicyOutput  # noqa: E402
from models.engine import CHECKPOINT_FORMAT, save_checkpoint  # noqa: E402
from models.perception_net import build_multitask, normalize  # noqa: E402
from models.policy_net import (POLICY_COMMANDS, POLICY_TASK, PolicyNet, build_policy, command_index,  # noqa: E402
                               load_perception_backbone)
from models.weights import WEIGHTS_DIR, WeightsError, load_weights  # noqa: E402

PERCEPTION_WEIGHTS = WEIGHTS_DIR / "perception_multitask.pt"
GOLDEN_RTOL = GOLDEN_ATOL = 1e-4  # float sums differ in the last bits between CPU kernels
HEIGHT, WIDTH = 160, 320
SPEEDS_MPS = (0.0, 4.5, 12.0)
COMMANDS = (RoadOption.LEFT, RoadOption.LANEFOLLOW, RoadOption.CHANGELANERIGHT)
GOLDEN = {
    "control": [[-0.046868, 0.488866, 0.511618], [0.048106, 0.483895, 0.489894], [0.047000, 0.505215, 0.485949]],
    "speed_mps": [0.677744, 0.634026, 0.718057],
    "waypoints_m": [[0.147713, 0.095265], [0.353736, -0.182834], [0.322139, -0.186048], [0.174727, 0.182878]],
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: on a busy shared machine two OpenMP threads wait on each other at every barrier."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def net() -> PolicyNet:
    torch.manual_seed(0)
    return build_policy().eval()


def _pattern_image() -> np.ndarray:
    """A deterministic (HEIGHT, WIDTH, 3) uint8 image with structure at every scale."""
    v, u, c = np.meshgrid(np.arange(HEIGHT), np.arange(WIDTH), np.arange(3), indexing="ij")
    return ((3 * u + 5 * v + 70 * c) % 256).astype(np.uint8)


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    image = _pattern_image()
    images = normalize(np.stack([image, image[::-1], np.roll(image, 40, axis=1)]))
    return (images, torch.tensor(SPEEDS_MPS),
            torch.tensor([command_index(c) for c in COMMANDS], dtype=torch.int64))


def test_commands():
    assert len(POLICY_COMMANDS) == 6 and RoadOption.VOID not in POLICY_COMMANDS
    assert [command_index(c) for c in POLICY_COMMANDS] == list(range(6))
    assert command_index(RoadOption.VOID) == command_index(RoadOption.LANEFOLLOW)
    assert command_index(int(RoadOption.RIGHT)) == POLICY_COMMANDS.index(RoadOption.RIGHT)
    with pytest.raises(ValueError):
        command_index(7)


def test_golden_outputs(net):
    with torch.no_grad():
        outputs = net(*_inputs())
    assert outputs["control"].shape == (3, 3)
    assert outputs["speed_mps"].shape == (3,)
    assert outputs["waypoints_m"].shape == (3, 4, 2)
    steer, throttle_brake = outputs["control"][:, 0], outputs["control"][:, 1:]
    assert steer.abs().max() <= 1.0 and throttle_brake.min() >= 0.0 and throttle_brake.max() <= 1.0
    actual = {"control": outputs["control"], "speed_mps": outputs["speed_mps"],
              "waypoints_m": outputs["waypoints_m"][0]}
    for key, expected in GOLDEN.items():
        assert torch.allclose(actual[key], torch.tensor(expected), rtol=GOLDEN_RTOL, atol=GOLDEN_ATOL), \
            f"{key}: got {actual[key].tolist()}, golden {expected}"


def test_command_changes_only_control_and_waypoints(net):
    images, speeds, _ = _inputs()
    with torch.no_grad():
        per_command = [net(images, speeds, torch.full((3,), index)) for index in range(len(POLICY_COMMANDS))]
    for outputs in per_command[1:]:
        assert torch.equal(outputs["speed_mps"], per_command[0]["speed_mps"])
        assert not torch.allclose(outputs["control"], per_command[0]["control"])
        assert not torch.allclose(outputs["waypoints_m"], per_command[0]["waypoints_m"])
    # Each frame gets its own command's branch: a mixed batch equals the per-command runs.
    mixed = torch.tensor([0, 4, 2])
    with torch.no_grad():
        outputs = net(images, speeds, mixed)
    for frame, index in enumerate(mixed.tolist()):
        assert torch.allclose(outputs["control"][frame], per_command[index]["control"][frame], atol=1e-6)
        assert torch.allclose(outputs["waypoints_m"][frame], per_command[index]["waypoints_m"][frame], atol=1e-6)


def test_speed_prediction_ignores_measured_speed(net):
    images, _, commands = _inputs()
    with torch.no_grad():
        slow = net(images, torch.zeros(3), commands)
        fast = net(images, torch.full((3,), 20.0), commands)
    assert torch.equal(slow["speed_mps"], fast["speed_mps"])
    assert not torch.allclose(slow["control"], fast["control"])


def test_gradient_reaches_only_the_selected_branch():
    torch.manual_seed(0)
    model = build_policy({"dropout": 0.0}).train()
    images, speeds, _ = _inputs()
    selected = command_index(RoadOption.RIGHT)
    outputs = model(images, speeds, torch.full((3,), selected))
    (outputs["control"].sum() + outputs["waypoints_m"].sum()).backward()
    for index, branch in enumerate(model.branches):
        grad_norm = sum(float(p.grad.abs().sum()) for p in branch.parameters() if p.grad is not None)
        assert (grad_norm > 0) == (index == selected), (index, grad_norm)
    # The waypoint head's last layer: only the selected command's rows learn.
    rows = model.waypoint_head[-1].weight.grad.abs().sum(1).view(len(POLICY_COMMANDS), -1).sum(1)
    assert [bool(r > 0) for r in rows] == [i == selected for i in range(len(POLICY_COMMANDS))]
    assert model.speed_head[-1].weight.grad is None or float(model.speed_head[-1].weight.grad.abs().sum()) == 0
    assert float(model.backbone.stem[0].weight.grad.abs().sum()) > 0


def test_config_round_trip():
    for config in (None, {"backbone": "resnet18", "image_width_px": 256, "image_height_px": 128,
                          "num_waypoints": 6, "waypoint_dt_s": 0.25, "speed_scale_mps": 8.0}):
        torch.manual_seed(1)
        model = build_policy(config)
        rebuilt = build_policy(model.config())
        assert rebuilt.config() == model.config()
        assert rebuilt.state_dict().keys() == model.state_dict().keys()
        assert all(v.shape == rebuilt.state_dict()[k].shape for k, v in model.state_dict().items())
        if config:
            assert {k: model.config()[k] for k in config} == config
    defaults = build_policy().config()
    multitask = build_multitask().config()
    assert defaults["backbone"] == "perception" and (defaults["image_width_px"], defaults["image_height_px"]) == (
        320, 160)
    assert (defaults["num_waypoints"], defaults["waypoint_dt_s"], defaults["speed_scale_mps"]) == (4, 0.5, 10.0)
    assert (defaults["perception_widths"], defaults["perception_depths"]) == (multitask["widths"],
                                                                              multitask["depths"])


def test_bad_config_and_inputs(net):
    with pytest.raises(ValueError, match="unknown policy config keys"):
        build_policy({"backbone": "perception", "width": 320})
    with pytest.raises(ValueError, match="backbone 'vgg'"):
        build_policy({"backbone": "vgg"})
    with pytest.raises(ValueError, match="multiples of 32"):
        build_policy({"image_width_px": 300})
    images, speeds, commands = _inputs()
    with pytest.raises(ValueError, match=r"\(B, 3, 160, 320\)"):
        net(images[..., :288], speeds, commands)
    with pytest.raises(ValueError, match="command indices"):
        net(images, speeds, torch.tensor([0, 1, 6]))
    with pytest.raises(ValueError, match="int64"):
        net(images, speeds, commands.int())
    with pytest.raises(ValueError, match="speed_mps"):
        net(images, speeds[:2], commands)


def test_load_perception_backbone():
    torch.manual_seed(0)
    model = build_policy()
    _, state, _ = load_weights(PERCEPTION_WEIGHTS, "perception")
    copied = load_perception_backbone(model, PERCEPTION_WEIGHTS)
    backbone_state = model.backbone.state_dict()
    assert copied == len(backbone_state) == sum(k.startswith("backbone.") for k in state)
    for key, value in backbone_state.items():
        assert torch.equal(value, state[f"backbone.{key}"]), key
    with pytest.raises(ValueError, match="'resnet18'"):
        load_perception_backbone(build_policy({"backbone": "resnet18"}), PERCEPTION_WEIGHTS)
    with pytest.raises(ValueError, match="shapes differ"):
        load_perception_backbone(build_policy({"perception_widths": [16, 32, 64, 96, 160]}), PERCEPTION_WEIGHTS)
    with pytest.raises(ValueError, match="missing"):
        load_perception_backbone(build_policy({"perception_depths": [1, 2, 3, 1]}), PERCEPTION_WEIGHTS)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, net):
    path = tmp_path_factory.mktemp("policy") / "best.pt"
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "task": POLICY_TASK, "model_config": net.config(),
                           "model": net.state_dict(), "epoch": 0})
    return path


def test_driving_policy_round_trip(net, checkpoint):
    policy = DrivingPolicy.from_weights(checkpoint)
    assert policy.image_size == (WIDTH, HEIGHT)
    assert not policy.model.training
    image = _pattern_image()
    output = policy(image, 4.5, RoadOption.LANEFOLLOW)
    assert isinstance(output, PolicyOutput)
    assert all(type(v) is float for v in (output.steer, output.throttle, output.brake, output.speed_mps))
    assert output.waypoints_m.shape == (4, 2) and output.waypoints_m.dtype == np.float64
    with torch.no_grad():
        expected = net(normalize(image[None]), torch.tensor([4.5]),
                       torch.tensor([command_index(RoadOption.LANEFOLLOW)]))
    assert np.allclose([output.steer, output.throttle, output.brake], expected["control"][0].numpy(), atol=1e-6)
    assert np.isclose(output.speed_mps, float(expected["speed_mps"][0]), atol=1e-6)
    assert np.allclose(output.waypoints_m, expected["waypoints_m"][0].numpy(), atol=1e-6)
    # VOID drives as LANEFOLLOW; a BGR->RGB view (negative strides) is accepted.
    assert policy(image, 4.5, RoadOption.VOID).steer == output.steer
    rgb_view = image[..., ::-1].copy()[..., ::-1]
    assert rgb_view.strides[-1] < 0
    assert policy(rgb_view, 4.5, RoadOption.LANEFOLLOW).steer == output.steer


def test_driving_policy_rejects_bad_inputs(checkpoint):
    policy = DrivingPolicy.from_weights(checkpoint)
    image = _pattern_image()
    with pytest.raises(ValueError, match=r"expected a 320x160 uint8 RGB image .* got \(128, 256, 3\) uint8"):
        policy(image[:128, :256], 3.0, RoadOption.LEFT)
    with pytest.raises(ValueError, match=r"got \(160, 320, 3\) float32"):
        policy(image.astype(np.float32), 3.0, RoadOption.LEFT)
    with pytest.raises(ValueError, match=r"got \(160, 320\) uint8"):
        policy(image[..., 0], 3.0, RoadOption.LEFT)
    for speed in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="speed_mps must be finite"):
            policy(image, speed, RoadOption.LEFT)
    with pytest.raises(WeightsError, match="'perception' model, not a 'policy' one"):
        DrivingPolicy.from_weights(PERCEPTION_WEIGHTS)

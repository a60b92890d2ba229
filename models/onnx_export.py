"""ONNX export of the multi-task perception net and its ONNX Runtime (CPU) inference path.

The exported graph takes normalised images (B, 3, H, W) with a dynamic batch and
returns the net's output tensors by name; ``OnnxMultiTask`` runs it with ONNX Runtime
and hands back the same dict the torch model returns, so the decoders
(``models.perception_decode``) and the evaluation work on either unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from models.perception_net import lane_row_anchors_px

OUTPUT_NAMES = ("heatmap", "box_log_size", "box_offset", "segmentation", "lanes")
OPSET = 18


class _TupleOutputs(nn.Module):
    """The net with its outputs as a tuple in OUTPUT_NAMES order (ONNX has no dicts)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.model(images)
        return tuple(outputs[name] for name in OUTPUT_NAMES)


def export_onnx(model: nn.Module, path: Path, input_size: tuple[int, int] = (320, 160)) -> Path:
    """Write ``path`` (.onnx, weights inside) and its .json (the net's config and input
    size). torch's dynamo exporter: the TorchScript one mis-exported this net (outputs off
    by up to 2.0 against torch)."""
    model = model.eval().cpu()
    width, height = input_size
    example = torch.zeros(1, 3, height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(_TupleOutputs(model), (example,), str(path), input_names=["images"],
                      output_names=list(OUTPUT_NAMES), opset_version=OPSET, dynamo=True, external_data=False,
                      dynamic_axes={"images": {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}})
    path.with_suffix(".json").write_text(json.dumps({"model_config": model.config(), "input_size": [width, height],
                                                     "outputs": list(OUTPUT_NAMES)}, indent=2))
    return path


class OnnxMultiTask:
    """ONNX Runtime inference with the torch model's calling convention."""

    def __init__(self, path: str | Path, threads: int = 2) -> None:
        import onnxruntime as ort
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        self.config: dict[str, Any] = meta["model_config"]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        arrays = self.session.run(list(OUTPUT_NAMES), {"images": np.ascontiguousarray(images.cpu().numpy())})
        outputs = {name: torch.from_numpy(a) for name, a in zip(OUTPUT_NAMES, arrays)}
        outputs["lane_row_anchors_px"] = lane_row_anchors_px(images.shape[-2], self.config["lane_rows"],
                                                             self.config["lane_row_start"])
        return outputs

    def eval(self) -> OnnxMultiTask:  # the evaluation calls model.eval() on torch and ONNX models alike
        return self


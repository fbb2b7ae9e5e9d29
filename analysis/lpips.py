"""LPIPS-AlexNet (Zhang et al. 2018, the `lpips` package v0.1) from local weight files (pure torch, no Django).

The network is torchvision's `alexnet().features` (five ReLU outputs) after the package's ScalingLayer; each
feature map is unit-normalised over channels, and the squared differences go through learned 1x1 layers,
are averaged over space and summed over layers. Weights: `DIR/alexnet.pth` (torchvision's AlexNet state
dict) and `DIR/alex.pth` (the package's linear layers, `weights/v0.1/alex.pth`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from peftlab.errors import UserInputError

LPIPS_WEIGHTS_HINT = (
    "pass --lpips-weights DIR holding alexnet.pth (torchvision's AlexNet IMAGENET1K_V1 state dict) and "
    "alex.pth (the lpips package's weights/v0.1/alex.pth); see docs/analysis.md"
)
CHANNELS = (64, 192, 384, 256, 256)
# Indices of torchvision's alexnet().features whose ReLU outputs LPIPS compares.
RELU_INDICES = (1, 4, 7, 9, 11)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10


def alexnet_features() -> nn.Sequential:
    """AlexNet's convolutional stack, laid out exactly like torchvision's `alexnet().features`."""
    return nn.Sequential(
        nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(64, 192, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(kernel_size=3, stride=2),
        nn.Conv2d(192, 384, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, kernel_size=3, padding=1),
        nn.ReLU(),
    )


def _load(path: Path, expected: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserInputError(f"LPIPS weights file {path} is missing: expected {expected}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types (pickle, zip, runtime) for a corrupt file
        raise UserInputError(f"cannot read {path} ({type(error).__name__}): expected {expected}") from None
    if not isinstance(state, dict):
        raise UserInputError(f"{path} is not a state dict: expected {expected}")
    return state


def _load_into(module: nn.Module, state: dict, path: Path, expected: str) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        # The first line after the header names the missing/unexpected key or the shape mismatch.
        detail = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise UserInputError(f"{path} does not fit ({detail}): expected {expected}") from None


class Lpips(nn.Module):
    """LPIPS-AlexNet v0.1; `features` embeds images once so that many pairs cost only a subtraction."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))
        self.features = alexnet_features()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in CHANNELS)

    @classmethod
    def from_folder(cls, folder: Path) -> Lpips:
        """Load `folder/alexnet.pth` and `folder/alex.pth`; a missing or malformed file is a UserInputError."""
        model = cls()
        expected = "torchvision's AlexNet state dict (features.0/3/6/8/10 weight and bias)"
        path = Path(folder) / "alexnet.pth"
        # The classifier's keys are not needed: LPIPS uses the convolutional features only.
        prefix = "features."
        state = {k[len(prefix) :]: v for k, v in _load(path, expected).items() if k.startswith(prefix)}
        _load_into(model.features, state, path, expected)
        expected = "the lpips package's v0.1 alex.pth (lin0..lin4.model.1.weight, shape [1, C, 1, 1])"
        path = Path(folder) / "alex.pth"
        state = _load(path, expected)
        lins = {
            f"{i}.weight": state[f"lin{i}.model.1.weight"]
            for i in range(len(CHANNELS))
            if f"lin{i}.model.1.weight" in state
        }
        _load_into(model.lins, lins, path, expected)
        return model.eval()

    def layers(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Unit-normalised ReLU feature maps of images in [0, 1] (N, 3, H, W)."""
        h = ((2 * images - 1) - self.shift) / self.scale
        out = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in RELU_INDICES:
                out.append(h / (h.pow(2).sum(dim=1, keepdim=True).sqrt() + EPS))
        return out

    def distance(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        """LPIPS between feature sets from `layers` (broadcast over the batch)."""
        return sum(
            lin((x - y) ** 2).mean(dim=(2, 3)).flatten() for lin, x, y in zip(self.lins, a, b, strict=True)
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS between two batches of images in [0, 1]."""
        return self.distance(self.layers(x), self.layers(y))


def load_images(paths: Sequence[Path], size: int) -> torch.Tensor:
    """RGB images resized to size x size, as a float tensor in [0, 1] (N, 3, size, size)."""
    from PIL import Image

    arrays = []
    for path in paths:
        with Image.open(path) as image:
            resized = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        arrays.append(np.asarray(resized, dtype=np.float32) / 255)
    if not arrays:
        return torch.zeros((0, 3, size, size))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)

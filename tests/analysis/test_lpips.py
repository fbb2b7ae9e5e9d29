"""LPIPS-AlexNet from local weight files: its properties, an independent re-computation, and score_images."""

import io
import json

import pytest
import torch
import torch.nn.functional as F
from django.core.management import CommandError, call_command

from analysis.lpips import Lpips, load_images
from analysis.services import _reference_path
from peftlab.errors import UserInputError

CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """Random weights in the two real file formats: torchvision's AlexNet and the lpips package's alex.pth."""
    generator = torch.Generator().manual_seed(0)
    alexnet = {"classifier.1.weight": torch.randn(8, 4, generator=generator)}  # ignored, like the real one's
    for index, (out, inp, k) in CONVS.items():
        alexnet[f"features.{index}.weight"] = (
            torch.randn(out, inp, k, k, generator=generator) / (inp * k * k) ** 0.5
        )
        alexnet[f"features.{index}.bias"] = 0.1 * torch.randn(out, generator=generator)
    # The package's learned weights are non-negative, so LPIPS is a sum of non-negative terms.
    lins = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator)
        for i, c in enumerate((64, 192, 384, 256, 256))
    }
    path = tmp_path_factory.mktemp("lpips")
    torch.save(alexnet, path / "alexnet.pth")
    torch.save(lins, path / "alex.pth")
    return path


def reference_lpips(x, y, folder):
    """LPIPS v0.1 written out with functional ops on the saved state dicts."""
    alexnet = torch.load(folder / "alexnet.pth", weights_only=True)
    lins = torch.load(folder / "alex.pth", weights_only=True)
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def relus(image):
        h = ((image * 2 - 1) - shift) / scale
        out = []
        for index, stride, padding, pool in (
            (0, 4, 2, True),
            (3, 1, 2, True),
            (6, 1, 1, False),
            (8, 1, 1, False),
        ):
            h = F.relu(
                F.conv2d(
                    h, alexnet[f"features.{index}.weight"], alexnet[f"features.{index}.bias"], stride, padding
                )
            )
            out.append(h)
            if pool:
                h = F.max_pool2d(h, 3, 2)
        out.append(F.relu(F.conv2d(h, alexnet["features.10.weight"], alexnet["features.10.bias"], 1, 1)))
        return out

    total = 0
    for i, (a, b) in enumerate(zip(relus(x), relus(y), strict=True)):
        a = a / (torch.sqrt((a**2).sum(1, keepdim=True)) + 1e-10)
        b = b / (torch.sqrt((b**2).sum(1, keepdim=True)) + 1e-10)
        total = total + F.conv2d((a - b) ** 2, lins[f"lin{i}.model.1.weight"]).mean(dim=(2, 3)).flatten()
    return total


def test_lpips_is_zero_on_itself_symmetric_and_grows_with_distortion(weights_dir):
    model = Lpips.from_folder(weights_dir)
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 64, 64, generator=generator)
    mild = (x + 0.05 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    strong = (x + 0.5 * torch.randn(x.shape, generator=generator)).clamp(0, 1)
    with torch.inference_mode():
        assert model(x, x).tolist() == [0.0, 0.0]
        assert torch.allclose(model(x, mild), model(mild, x))
        assert (model(x, mild) > 0).all() and (model(x, strong) > model(x, mild)).all()
        assert torch.allclose(model(x, strong), reference_lpips(x, strong, weights_dir), rtol=1e-5)


def test_lpips_names_the_missing_or_malformed_file(weights_dir, tmp_path):
    with pytest.raises(
        UserInputError, match=r"alexnet\.pth is missing: expected torchvision's AlexNet"
    ) as error:
        Lpips.from_folder(tmp_path)
    assert "\n" not in str(error.value)
    (tmp_path / "alexnet.pth").write_bytes((weights_dir / "alexnet.pth").read_bytes())
    torch.save({"lin0.model.1.weight": torch.rand(1, 64, 1, 1)}, tmp_path / "alex.pth")
    with pytest.raises(UserInputError, match=r"alex\.pth does not fit \(Missing key.*lpips package's v0\.1"):
        Lpips.from_folder(tmp_path)
    (tmp_path / "alex.pth").write_text("not a checkpoint")
    with pytest.raises(UserInputError, match=r"cannot read .*alex\.pth") as error:
        Lpips.from_folder(tmp_path)
    assert "\n" not in str(error.value)


@pytest.mark.django_db
def test_score_images_reports_lpips_per_arm_with_sample_sizes(seed_run, tiny_clip_dir, weights_dir, tmp_path):
    def score(*extra):
        out = io.StringIO()
        call_command(
            "score_images",
            str(seed_run.pk),
            "--clip-model",
            str(tiny_clip_dir),
            "--bootstrap",
            "20",
            *extra,
            stdout=out,
        )
        return out.getvalue()

    data = json.loads(score("--lpips-weights", str(weights_dir), "--lpips-size", "64", "--json"))
    rows = {(r["arm"], r["prompt"]): r for r in data["lpips"]["rows"]}
    references = {ref for prompt in seed_run.prompt_set.prompts.all() for ref in prompt.reference_images}
    for arm in ("lora", "ti"):
        pooled = rows[(arm, "all")]
        assert (pooled["images"], pooled["references"]) == (5, len(references))
        assert pooled["ci_low"] <= pooled["lpips"] <= pooled["ci_high"]
    image = seed_run.images.select_related("prompt").first()
    row = rows[(image.arm, image.prompt.landmark)]

    refs = [_reference_path(ref) for ref in image.prompt.reference_images]
    model = Lpips.from_folder(weights_dir)
    with torch.inference_mode():
        expected = model(load_images([image.image.path] * len(refs), 64), load_images(refs, 64)).mean().item()
    assert (row["images"], row["references"]) == (1, len(refs))
    assert row["lpips"] == pytest.approx(expected, rel=1e-5)
    assert "LPIPS (AlexNet)" in score("--lpips-weights", str(weights_dir), "--lpips-size", "64")
    with pytest.raises(CommandError, match="no LPIPS weights folder at"):
        score("--lpips-weights", str(tmp_path / "absent"))

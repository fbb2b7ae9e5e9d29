"""Image metrics: FID/KID on known feature sets, and score_images on the seed study with a tiny offline CLIP."""

import io
import json

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from scipy import linalg

from analysis.metrics import ClipFeatures, frechet_distance, kernel_inception_distance


def scipy_fid(x, y):
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    return ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(cx + cy - 2 * linalg.sqrtm(cx @ cy).real)


def test_fid_matches_the_sqrtm_formula_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(200, 8)), rng.normal(size=(150, 8))
    assert frechet_distance(x, y) == pytest.approx(scipy_fid(x, y), rel=1e-6)
    assert frechet_distance(x, x) == pytest.approx(0, abs=1e-9)
    assert frechet_distance(x, y) < 0.5 < frechet_distance(x, y + 1.0)
    # A shift moves only the mean term: |d - 1|^2 - |d|^2 with d = mu_x - mu_y; covariances are unchanged.
    d = x.mean(0) - y.mean(0)
    assert frechet_distance(x, y + 1.0) - frechet_distance(x, y) == pytest.approx(((d - 1) ** 2 - d**2).sum())
    assert np.isnan(frechet_distance(x[:1], y))


def test_kid_is_the_unbiased_polynomial_mmd():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 4)), rng.normal(size=(50, 4))
    kernel = lambda a, b: (a @ b / 4 + 1) ** 3  # noqa: E731
    within_x = sum(kernel(x[i], x[j]) for i in range(60) for j in range(60) if i != j) / (60 * 59)
    within_y = sum(kernel(y[i], y[j]) for i in range(50) for j in range(50) if i != j) / (50 * 49)
    cross = sum(kernel(a, b) for a in x for b in y) / (60 * 50)
    assert kernel_inception_distance(x, y) == pytest.approx(within_x + within_y - 2 * cross)
    assert abs(kernel_inception_distance(x, y)) < 0.1 < kernel_inception_distance(x, y + 1.0)


@pytest.mark.django_db
def test_score_images_uses_each_images_own_prompt_and_reports_sample_sizes(seed_run, tiny_clip_dir):
    out = io.StringIO()
    call_command(
        "score_images",
        str(seed_run.pk),
        "--clip-model",
        str(tiny_clip_dir),
        "--bootstrap",
        "20",
        "--json",
        stdout=out,
    )
    data = json.loads(out.getvalue())
    clip = {(r["arm"], r["prompt"]): r for r in data["clip"]["rows"]}
    image = seed_run.images.select_related("prompt").first()
    features = ClipFeatures(tiny_clip_dir)
    own = 100 * max(
        0.0, (features.images([image.image.path]) @ features.texts([image.rendered_prompt]).T)[0, 0]
    )
    row = clip[(image.arm, image.prompt.landmark)]
    assert row["images"] == 1
    assert row["clip_score"] == pytest.approx(own, rel=1e-5)
    assert {r["images"] for r in data["clip"]["rows"] if r["prompt"] == "all"} == {5}
    distances = {(r["arm"], r["prompt"]): r for r in data["distances"]["rows"]}
    pooled = distances[("lora", "all")]
    references = {ref for prompt in seed_run.prompt_set.prompts.all() for ref in prompt.reference_images}
    assert (pooled["images"], pooled["references"]) == (5, len(references))
    assert pooled["fid"] >= 0 and pooled["kid"] is not None
    assert pooled["fid_ci_low"] <= pooled["fid_ci_high"]
    assert "FID is biased" in pooled["warning"]
    assert (
        distances[(image.arm, image.prompt.landmark)]["fid"] is None
    )  # one image: not computed, and said so
    assert "LPIPS not computed: pass --lpips-weights DIR" in data["lpips"]["note"]


@pytest.mark.django_db
def test_score_images_without_a_clip_model_says_how_to_provide_one(seed_run, tmp_path):
    with pytest.raises(CommandError, match="--clip-model PATH") as error:
        call_command("score_images", str(seed_run.pk))
    assert "\n" not in str(error.value)
    with pytest.raises(CommandError, match="no CLIP model at"):
        call_command("score_images", str(seed_run.pk), "--clip-model", str(tmp_path))

"""Image metrics of a generation run (pure torch/transformers/scipy, no Django).

CLIP score: cosine between an image and the exact prompt it was rendered from (x100, each image's score
floored at 0; torchmetrics floors the mean instead, which differs only when some cosines are negative). FID and KID: distances between an arm's images and the reference images, on CLIP
vision features. LPIPS (AlexNet, from local weights): mean perceptual distance of each image to its prompt's
reference images. Every value carries a percentile bootstrap interval over images.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from analysis.lpips import LPIPS_WEIGHTS_HINT, Lpips, load_images
from analysis.stats import ResultTable
from peftlab.errors import UserInputError
from peftlab.progress import Progress, ProgressCallback, ignore_progress

CLIP_MODEL_HINT = (
    "pass --clip-model PATH, a local CLIP folder (config.json, weights, tokenizer, preprocessor), e.g. from "
    "`huggingface-cli download openai/clip-vit-base-patch32 --local-dir PATH` on a machine with internet"
)
# Below this many images per set, FID's covariance estimate is rank-deficient and the number says little.
FID_MIN_RECOMMENDED = 50
ALL = "all"


@dataclass(frozen=True)
class ScoreConfig:
    """How a run's images are scored."""

    clip_model: Path = field(metadata={"help": "Local CLIP folder (model, tokenizer and image processor)."})
    bootstrap: int = field(
        default=1000, metadata={"help": "Bootstrap resamples of images (0: no intervals)."}
    )
    seed: int = field(default=0, metadata={"help": "Bootstrap seed."})
    confidence: float = field(default=0.95, metadata={"help": "Level of the bootstrap intervals."})
    batch_size: int = field(default=16, metadata={"help": "Images per CLIP forward pass."})
    lpips_weights: Path | None = field(
        default=None, metadata={"help": "Folder with alexnet.pth and alex.pth (None: LPIPS not computed)."}
    )
    lpips_size: int = field(default=256, metadata={"help": "Side images are resized to for LPIPS."})

    def __post_init__(self) -> None:
        if not Path(self.clip_model).is_dir() or not (Path(self.clip_model) / "config.json").is_file():
            raise UserInputError(f"no CLIP model at {self.clip_model}: {CLIP_MODEL_HINT}")
        if self.bootstrap < 0 or self.batch_size < 1:
            raise UserInputError("bootstrap must be 0 or more and batch_size at least 1")
        if not 0.5 <= self.confidence < 1:
            raise UserInputError(f"confidence must be in [0.5, 1), got {self.confidence}")
        if self.lpips_weights is not None and not Path(self.lpips_weights).is_dir():
            raise UserInputError(f"no LPIPS weights folder at {self.lpips_weights}: {LPIPS_WEIGHTS_HINT}")
        if self.lpips_size < 32:
            raise UserInputError(
                f"lpips_size must be at least 32 (AlexNet's receptive field), got {self.lpips_size}"
            )


@dataclass(frozen=True)
class ScoredImage:
    """One image to score: its arm, its prompt's group label, its file and the exact text it was rendered from."""

    arm: str
    prompt: str
    path: Path
    text: str


@dataclass(frozen=True)
class ClipScoreRow:
    """Mean CLIP score of an arm's images (overall or for one prompt) with a bootstrap interval."""

    arm: str
    prompt: str
    images: int
    clip_score: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class DistanceRow:
    """FID and KID between an arm's images and the reference images, with sample sizes and a warning."""

    arm: str
    prompt: str
    images: int
    references: int
    fid: float
    fid_ci_low: float
    fid_ci_high: float
    kid: float
    kid_ci_low: float
    kid_ci_high: float
    warning: str


@dataclass(frozen=True)
class LpipsRow:
    """Mean LPIPS of an arm's images to their prompts' reference images, with a bootstrap interval."""

    arm: str
    prompt: str
    images: int
    references: int
    lpips: float
    ci_low: float
    ci_high: float


@dataclass
class ImageScores:
    """Every image metric of a run."""

    clip: ResultTable[ClipScoreRow]
    distances: ResultTable[DistanceRow]
    lpips: ResultTable[LpipsRow]
    feature_dim: int

    def to_dict(self) -> dict:
        """A JSON-able dict of the tables."""
        return {
            "clip": self.clip.to_dict(),
            "distances": self.distances.to_dict(),
            "lpips": self.lpips.to_dict(),
        }

    def to_text(self) -> str:
        """The tables as text."""
        return "\n".join([self.clip.to_text(), self.distances.to_text(), self.lpips.to_text()])


def frechet_distance(x: np.ndarray, y: np.ndarray) -> float:
    """FID between two feature sets: |mu_x - mu_y|^2 + Tr(S_x + S_y - 2 (S_x S_y)^1/2); NaN under 2 samples each.

    With S_x = A A^T and S_y = B B^T (A, B the centred features over sqrt(n - 1)), the eigenvalues of S_x S_y
    are the squared singular values of A^T B, so Tr (S_x S_y)^1/2 is the nuclear norm of A^T B: exact, and an
    SVD of an images x references matrix instead of sqrtm of a features x features one.
    """
    if len(x) < 2 or len(y) < 2:
        return math.nan
    a = (x - x.mean(axis=0)) / math.sqrt(len(x) - 1)
    b = (y - y.mean(axis=0)) / math.sqrt(len(y) - 1)
    cross = np.linalg.svd(a @ b.T, compute_uv=False).sum()
    mean_term = float(((x.mean(axis=0) - y.mean(axis=0)) ** 2).sum())
    return mean_term + float((a * a).sum() + (b * b).sum() - 2 * cross)


def kernel_inception_distance(x: np.ndarray, y: np.ndarray) -> float:
    """KID: unbiased MMD^2 with the kernel (x.y / d + 1)^3 (as torchmetrics); NaN under 2 samples each."""
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        return math.nan
    d = x.shape[1]
    k_xx, k_yy, k_xy = (((a @ b.T) / d + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
    # Unbiased: the within-set sums leave out the diagonal (each sample with itself).
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2 * k_xy.mean())


class ClipFeatures:
    """A local CLIP model that embeds images and texts (L2-normalised)."""

    def __init__(self, path: Path, batch_size: int = 16) -> None:
        import torch
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        try:
            self.model = CLIPModel.from_pretrained(path).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(path)
            self.processor = CLIPImageProcessor.from_pretrained(path)
        except (OSError, ValueError) as error:
            raise UserInputError(
                f"cannot load a CLIP model from {path} ({type(error).__name__}): {CLIP_MODEL_HINT}"
            ) from None
        self.torch = torch
        self.batch_size = batch_size
        self.max_length = self.model.config.text_config.max_position_embeddings

    def images(self, paths: Sequence[Path], progress: Callable[[int], None] = lambda _: None) -> np.ndarray:
        """Normalised CLIP image embeddings, one row per path."""
        from PIL import Image

        out = []
        for start in range(0, len(paths), self.batch_size):
            batch = []
            for path in paths[start : start + self.batch_size]:
                with Image.open(path) as image:
                    batch.append(image.convert("RGB"))
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
            with self.torch.inference_mode():
                out.append(self.model.get_image_features(pixel_values=pixels).pooler_output)
            progress(min(start + self.batch_size, len(paths)))
        return self._normalised(out, self.model.config.projection_dim)

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        """Normalised CLIP text embeddings (texts longer than the model's context are truncated)."""
        out = []
        for start in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            with self.torch.inference_mode():
                out.append(self.model.get_text_features(**tokens).pooler_output)
        return self._normalised(out, self.model.config.projection_dim)

    def _normalised(self, batches: list, dim: int) -> np.ndarray:
        if not batches:
            return np.zeros((0, dim))
        features = self.torch.cat(batches).double()
        return self.torch.nn.functional.normalize(features, dim=-1).numpy()


def _interval(samples: list[float], confidence: float) -> tuple[float, float]:
    values = np.asarray(samples, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan
    tail = 100 * (1 - confidence) / 2
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def _bootstrap_mean(
    values: np.ndarray, rng: np.random.Generator, resamples: int, confidence: float
) -> tuple[float, float, float]:
    """The mean of values and its percentile bootstrap interval over them (NaN for no values)."""
    if len(values) == 0:
        return math.nan, math.nan, math.nan
    boot = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)]
    return float(values.mean()), *_interval(boot, confidence)


def _fid_warning(images: int, references: int, dim: int) -> str:
    if min(images, references) < 2:
        return "fewer than 2 images in a set: FID and KID not computed"
    if min(images, references) < max(FID_MIN_RECOMMENDED, dim):
        return (
            f"only {images} images vs {references} references for {dim}-dim features: FID is biased and "
            f"unstable below ~{max(FID_MIN_RECOMMENDED, dim)} per set; read KID (unbiased) and the intervals"
        )
    return ""


def score_images(
    images: Sequence[ScoredImage],
    references: dict[str, list[Path]],
    config: ScoreConfig,
    progress: ProgressCallback = ignore_progress,
) -> ImageScores:
    """CLIP score per image with its own prompt, and FID/KID of each arm against the references."""
    if not images:
        raise UserInputError("the run has no images to score; render or import some first")
    clip = ClipFeatures(config.clip_model, config.batch_size)
    rng = np.random.default_rng(config.seed)
    reference_paths = sorted({path for paths in references.values() for path in paths})
    total = len(images) + len(reference_paths)
    image_features = clip.images(
        [item.path for item in images], lambda done: progress(Progress("clip", done, total))
    )
    reference_features = clip.images(
        reference_paths, lambda done: progress(Progress("clip", len(images) + done, total))
    )
    reference_row = {path: index for index, path in enumerate(reference_paths)}
    text_features = clip.texts([item.text for item in images])
    # 100 x cosine, floored at 0 per image so every image's score is a valid CLIP score on its own
    # (torchmetrics floors the mean over images instead).
    scores = 100 * np.maximum((image_features * text_features).sum(axis=1), 0)
    arms = np.array([item.arm for item in images])
    prompts = np.array([item.prompt for item in images])
    clip_rows, distance_rows = [], []
    groups = [(arm, ALL) for arm in dict.fromkeys(arms)] + sorted(set(zip(arms, prompts, strict=True)))
    for index, (arm, prompt) in enumerate(groups):
        selected = np.flatnonzero((arms == arm) & ((prompts == prompt) | (prompt == ALL)))
        clip_rows.append(
            ClipScoreRow(
                arm,
                prompt,
                len(selected),
                *_bootstrap_mean(scores[selected], rng, config.bootstrap, config.confidence),
            )
        )
        wanted = {p for i in selected for p in references.get(images[i].prompt, [])}
        x = image_features[selected]
        y = reference_features[[reference_row[p] for p in sorted(wanted)]]
        fid, kid = frechet_distance(x, y), kernel_inception_distance(x, y)
        fid_boot, kid_boot = [], []
        if not math.isnan(fid):
            for _ in range(config.bootstrap):
                bx, by = x[rng.integers(0, len(x), len(x))], y[rng.integers(0, len(y), len(y))]
                fid_boot.append(frechet_distance(bx, by))
                kid_boot.append(kernel_inception_distance(bx, by))
        distance_rows.append(
            DistanceRow(
                arm=arm,
                prompt=prompt,
                images=len(x),
                references=len(y),
                fid=fid,
                fid_ci_low=_interval(fid_boot, config.confidence)[0],
                fid_ci_high=_interval(fid_boot, config.confidence)[1],
                kid=kid,
                kid_ci_low=_interval(kid_boot, config.confidence)[0],
                kid_ci_high=_interval(kid_boot, config.confidence)[1],
                warning=_fid_warning(len(x), len(y), x.shape[1]),
            )
        )
        progress(Progress("metrics", index + 1, len(groups)))
    level = f"{config.confidence:.0%}"
    return ImageScores(
        clip=ResultTable(
            f"CLIP score with each image's own prompt ({level} bootstrap intervals)", ClipScoreRow, clip_rows
        ),
        distances=ResultTable(
            f"FID and KID to the reference images on CLIP vision features ({level} bootstrap intervals)",
            DistanceRow,
            distance_rows,
            note="Sample sizes are per set; FID needs many images per set to mean anything (see warning).",
        ),
        lpips=_lpips_table(images, references, groups, config, progress),
        feature_dim=int(image_features.shape[1]),
    )


def _lpips_table(
    images: Sequence[ScoredImage],
    references: dict[str, list[Path]],
    groups: list[tuple[str, str]],
    config: ScoreConfig,
    progress: ProgressCallback,
) -> ResultTable[LpipsRow]:
    """Mean LPIPS of each image to its prompt's references, averaged per group; a note when not computed."""
    title = f"LPIPS (AlexNet) to the reference images ({config.confidence:.0%} bootstrap intervals)"
    if config.lpips_weights is None:
        return ResultTable(title, LpipsRow, [], note=f"LPIPS not computed: {LPIPS_WEIGHTS_HINT}")
    import torch

    model = Lpips.from_folder(config.lpips_weights)
    reference_paths = sorted({path for item in images for path in references.get(item.prompt, [])})
    # Each image and reference goes through AlexNet once; pairs then cost a subtraction per layer.
    with torch.inference_mode():
        reference_layers = model.layers(load_images(reference_paths, config.lpips_size))
        reference_row = {path: index for index, path in enumerate(reference_paths)}
        per_image = np.full(len(images), math.nan)
        for index, item in enumerate(images):
            rows = [reference_row[path] for path in references.get(item.prompt, [])]
            if rows:
                layers = model.layers(load_images([item.path], config.lpips_size))
                per_image[index] = model.distance(layers, [f[rows] for f in reference_layers]).mean().item()
            progress(Progress("lpips", index + 1, len(images)))
    # Its own generator: enabling LPIPS leaves the CLIP/FID/KID intervals of a seed unchanged.
    rng = np.random.default_rng(config.seed)
    arms = np.array([item.arm for item in images])
    prompts = np.array([item.prompt for item in images])
    rows = []
    for arm, prompt in groups:
        selected = np.flatnonzero((arms == arm) & ((prompts == prompt) | (prompt == ALL)))
        values = per_image[selected]
        values = values[~np.isnan(values)]
        wanted = {path for i in selected for path in references.get(images[i].prompt, [])}
        rows.append(
            LpipsRow(
                arm,
                prompt,
                len(values),
                len(wanted),
                *_bootstrap_mean(values, rng, config.bootstrap, config.confidence),
            )
        )
    return ResultTable(
        title,
        LpipsRow,
        rows,
        note="Per image: mean LPIPS to its prompt's references (lower: closer); images without references are left out.",
    )

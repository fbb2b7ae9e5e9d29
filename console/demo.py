"""The demo pipeline: every stage calls the same services as the commands, on the tiny offline model.

captioned images -> prepared dataset -> LoRA, DoRA, LoKr and TI on one loop -> renderings of the base and
each adapter under identical seeds -> an open blind study
-> a pilot of simulated participants -> the analysis report. Then `make demo` serves it.

`family="sdxl"` (`manage.py demo --family sdxl`, `make demo FAMILY=sdxl`) runs the same stages on the tiny
SDXL-shaped model (two text encoders, a text_time UNet) with the methods proven on SDXL: LoRA and TI.
"""

import random
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.contrib.auth import get_user_model
from django.urls import reverse

from analysis.services import study_plan_lock, study_report_write
from generation.engine import AdapterArm, GenerationConfig
from generation.services import generation_run_render, prompt_set_install_builtin
from peftlab.errors import UserInputError
from studies.models import Participant, Study
from studies.services import (
    ExternalIds,
    Page,
    participant_answer_all,
    participant_start,
    study_create_from_generation,
)
from trainer.engine.config import build_config
from trainer.engine.dataset import PrepareConfig
from trainer.engine.synthetic import SyntheticDatasetConfig, make_synthetic_dataset
from trainer.engine.tiny_model import TinyModelConfig
from trainer.selectors import training_run_adapter_path
from trainer.services import dataset_prepare, tiny_model_build, training_run_create, training_run_execute

DEMO_TOKEN = "<demo-style>"
DEMO_RESEARCHER = "researcher"
# Each method's demo settings on the tiny model: learning rates high enough to move it in four short epochs.
# Both families' demos train these, in this order (every method is proven on SD 1.x and SDXL alike).
DEMO_METHODS = {
    "lora": {"learning_rate": 1e-2, "rank": 4, "alpha": 4},
    "dora": {"learning_rate": 1e-2, "rank": 4, "alpha": 4},
    "lokr": {"learning_rate": 1e-2},
    "ti": {"learning_rate": 5e-2, "placeholder_token": DEMO_TOKEN, "initializer_token": "style"},
}
FAMILY_LABELS = {"sd15": "SD 1.x", "sdxl": "SDXL"}
DEMO_STOPPING = {
    "rule": "anytime",
    "alpha": 0.05,
    "min_participants": 10,
    "max_participants": 60,
    "adaptive": True,
}


@dataclass(frozen=True)
class DemoResult:
    """What the demo produced, for the closing summary."""

    study: Study
    password: str
    lines: list[str]


def run_demo(
    *,
    output: Path,
    log: Callable[[str], None],
    pilot_participants: int = 12,
    family: str = "sd15",
    images: int = 16,
    epochs: int = 4,
) -> DemoResult:
    """Run every stage into `output` on the tiny model of `family` (sd15 or sdxl), with `images` synthetic
    images and `epochs` per method; return the study it opened and the lines that say what was produced."""
    if family not in FAMILY_LABELS:
        raise UserInputError(f"--family must be one of {', '.join(FAMILY_LABELS)}, got {family!r}.")
    if images < 4:
        raise UserInputError(f"--images must be at least 4 (a training and a validation split), got {images}.")
    if epochs < 1:
        raise UserInputError(f"--epochs must be at least 1, got {epochs}.")
    methods = tuple(DEMO_METHODS)
    output = Path(output)
    log(f"1/6 Building the tiny offline {FAMILY_LABELS[family]} model and a synthetic captioned dataset")
    model = tiny_model_build(output=output / "tiny-model", config=TinyModelConfig(family=family))
    shutil.rmtree(output / "raw", ignore_errors=True)  # a rerun with fewer --images draws only those
    make_synthetic_dataset(output / "raw", SyntheticDatasetConfig(count=images))
    dataset, _ = dataset_prepare(
        source=output / "raw", output=output / "dataset", config=PrepareConfig(resolution=64, min_size=64)
    )

    log(f"2/6 Training {method_names(methods)} on the same loop")
    shared = {"model": str(model.path), "resolution": 64, "epochs": epochs, "batch_size": 4, "seed": 0}
    runs = {}
    for method in methods:
        overrides = DEMO_METHODS[method]
        run_dir = output / "runs" / method
        shutil.rmtree(run_dir, ignore_errors=True)  # a rerun of the demo starts its runs afresh
        config = build_config(method, **shared, **overrides)
        run = training_run_create(
            method=method, dataset_dir=Path(dataset.path), output=run_dir, config=config
        )
        runs[method] = training_run_execute(run=run)

    log(
        "3/6 Rendering the built-in landmark prompts with the base model and each adapter under identical seeds"
    )
    adapters = tuple(
        AdapterArm.detect(method, training_run_adapter_path(run=run)) for method, run in runs.items()
    )
    arms = ["base", *(adapter.name for adapter in adapters)]
    generation = generation_run_render(
        prompt_set=prompt_set_install_builtin(),
        config=GenerationConfig(
            model=str(model.path),
            arms=tuple(arms),
            adapters=adapters,
            seeds=(0, 1),
            steps=4,
            width=64,
            height=64,
        ),
        name=f"demo: {' vs '.join(['base', *(DISPLAY[method] for method in methods)])}",
    )

    log("4/6 Opening a blind study over every pair of arms, its plan and stopping rule preregistered")
    study = study_create_from_generation(
        run=generation,
        arms=arms,
        arm_labels={
            "base": "Base model",
            **{method: run.get_method_display() for method, run in runs.items()},
        },
        title="peftlab demo study",
        status=Study.Status.OPEN,
        # Recruitment as on Prolific: at most 60 admitted, and a code per outcome (the finished one is random).
        max_participants=60,
        completion_codes={"failed_attention": {"code": "DEMO-RETURN"}, "full": {"code": "DEMO-FULL"}},
    )
    # Preregistered before any answer, as a real study should be: the report then quotes the plan's hash. The
    # rule stops admission once every comparison is decided (anytime-valid), or at 60; pairs are adaptive.
    study = study_plan_lock(study=study, stopping=DEMO_STOPPING)

    log(f"5/6 Piloting it with {pilot_participants} simulated participants")
    simulate_participants(study=study, count=pilot_participants, preferred_arm="lora", seed=0)

    log("6/6 Writing the analysis report")
    report_files = study_report_write(study=study, output_dir=output / "report")
    password = researcher_ensure()
    lines = [
        f"model       {model.path}",
        f"dataset     {dataset.path}: {dataset.num_train} train, {dataset.num_validation} validation",
        *(
            f"{method:<11} {run.output_path} (best epoch {run.best_epoch}, validation loss {run.best_val_loss:.4f})"
            for method, run in runs.items()
        ),
        f"images      {generation.images.count()} in generation run {generation.pk}",
        f"study       {study.slug}: {study.trials.count()} trials, {pilot_participants} simulated participants",
        f"report      {output / 'report'} ({len(report_files)} files)",
    ]
    return DemoResult(study=study, password=password, lines=lines)


DISPLAY = {"lora": "LoRA", "dora": "DoRA", "lokr": "LoKr", "ti": "TI"}


def method_names(methods: tuple[str, ...]) -> str:
    """'LoRA, DoRA, LoKr and Textual Inversion' for the methods given."""
    names = [DISPLAY[method] if method != "ti" else "Textual Inversion" for method in methods]
    return ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]


def simulate_participants(*, study: Study, count: int, preferred_arm: str, seed: int) -> list[Participant]:
    """Bots that answer every page, passing attention checks and preferring `preferred_arm` 70 % of the time."""
    rng = random.Random(seed)

    def choose(participant: Participant, page: Page) -> str:
        if page.question is None:  # an attention check
            return page.trial.expected_choice
        shown = participant.shown(page.trial)
        if preferred_arm in (shown.left_arm, shown.right_arm) and rng.random() < 0.7:
            return "left" if shown.left_arm == preferred_arm else "right"
        return rng.choice(page.choices)

    return [
        participant_answer_all(
            participant=participant_start(
                study=study,
                ids=ExternalIds(external_id=f"DEMO-BOT-{number:03d}", source=Participant.Source.DEMO),
                consent_given=True,
            ),
            choose=choose,
            feedback="simulated by the demo",
        )
        for number in range(count)
    ]


def researcher_ensure() -> str:
    """Create (or reset) the demo's staff account and return its new password."""
    password = secrets.token_urlsafe(9)
    user, _ = get_user_model().objects.get_or_create(username=DEMO_RESEARCHER)
    user.is_staff = user.is_superuser = True
    user.set_password(password)
    user.save()
    return password


def demo_links(*, study: Study, base_url: str) -> list[str]:
    """Where to go once the demo server is up."""
    return [
        f"participant {base_url}{reverse('studies:entry', args=[study.slug])}",
        f"preview     {base_url}{reverse('studies:preview', args=[study.slug])}",
        f"study page  {base_url}{reverse('console:study_detail', args=[study.slug])}",
        f"dashboard   {base_url}{reverse('studies:dashboard', args=[study.slug])}",
        f"report      {base_url}{reverse('analysis:report', args=[study.slug])}",
        f"gallery     {base_url}{reverse('generation:run_gallery', args=[study.generation_run_id])}",
        f"console     {base_url}{reverse('console:runs')}",
    ]

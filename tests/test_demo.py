"""The demo's pipeline, without serving: a broken `make demo` fails CI."""

import json
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings

from generation.models import GeneratedImage
from studies.models import Participant, Study
from trainer.models import Dataset, TrainingRun

REPO = Path(__file__).resolve().parent.parent


# Per family: the demo's extra arguments and the images it trains on. The SD 1.x demo runs as `make demo`
# does; the SDXL one on the tiny SDXL model, smaller (8 images, 2 epochs), to stay quick. Both train these.
DEMOS = {"sd15": ((), 16), "sdxl": (("--family", "sdxl", "--images", "8", "--epochs", "2"), 8)}
METHODS = ["dora", "lokr", "lora", "ti"]


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("family", DEMOS)
def test_demo_pipeline_runs_end_to_end(tmp_path, client, family):
    arguments, images = DEMOS[family]
    methods = METHODS
    out = StringIO()
    with override_settings(MEDIA_ROOT=tmp_path / "media"):
        call_command("demo", "--output", str(tmp_path / "demo"), *arguments, stdout=out)
        text = out.getvalue()
        dataset = Dataset.objects.get()
        assert dataset.num_train + dataset.num_validation == images and dataset.num_skipped == 0
        index = json.loads((tmp_path / "demo" / "tiny-model" / "model_index.json").read_text())
        assert index["_class_name"] == {"sd15": "StableDiffusionPipeline", "sdxl": "StableDiffusionXLPipeline"}[family]
        runs = TrainingRun.objects.all()
        # The family's methods trained on one loop, each an arm of one study beside the base model.
        assert sorted(run.method for run in runs) == methods
        assert all(run.status == TrainingRun.Status.FINISHED for run in runs)
        assert set(GeneratedImage.objects.values_list("arm", flat=True)) == {"base", *methods}
        study = Study.objects.get()
        assert sorted(study.arms) == sorted(["base", *methods])
        assert study.status == Study.Status.OPEN
        assert study.plan["stopping"]["rule"] == "anytime" and study.plan_sha256
        assert Participant.objects.filter(study=study, finished_at__isnull=False).count() == 12
        assert (tmp_path / "demo" / "report" / "report.json").is_file()
        # The demo preregisters before its pilot; the self-contained report quotes the plan's hash.
        assert study.plan_locked_at is not None
        methods = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())["methods"]
        assert f"preregistered (sha256 {study.plan_sha256}" in methods and "no deviations" in methods
        html = (tmp_path / "demo" / "report" / "report.html").read_text()
        # Three or more arms: the Bradley-Terry ranking of them comes above the pairwise forest plot.
        assert 'id="forest-plot"' in html and html.index('id="leaderboard"') < html.index('id="forest-plot"')
        # What the demo prints is what a person then opens: the participant page and, logged in, the report.
        participant_url = next(
            line.split()[-1] for line in text.splitlines() if line.startswith("participant")
        )
        assert client.get(participant_url.removeprefix("http://127.0.0.1:8000")).status_code == 200
        username, password = next(
            line.split()[2::2] for line in text.splitlines() if line.startswith("staff login")
        )
        assert client.login(username=username, password=password)
        report = client.get(f"/analysis/{study.slug}/")
        assert report.status_code == 200 and b"Bradley" in report.content
        # The staff pages it prints answer too: the preview (records nothing) and the console's study page.
        for name in ("preview", "study page"):
            url = next(line.split()[-1] for line in text.splitlines() if line.startswith(name))
            assert client.get(url.removeprefix("http://127.0.0.1:8000")).status_code == 200
        assert study.max_participants == 60 and study.completion_codes["full"] == {"code": "DEMO-FULL"}


def test_demo_refuses_an_unknown_family_in_one_line(tmp_path):
    """Before anything is built: one line on stderr naming the option, and a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "manage.py", "demo", "--output", str(tmp_path / "demo"), "--family", "sd3"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"},
    )
    assert done.returncode != 0
    assert done.stderr.strip() == "CommandError: --family must be one of sd15, sdxl, got 'sd3'."
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("arguments", [("--images", "2"), ("--epochs", "0")])
def test_demo_refuses_too_few_images_or_epochs(tmp_path, arguments):
    with pytest.raises(CommandError, match=arguments[0]):
        call_command("demo", "--output", str(tmp_path / "demo"), *arguments, stdout=StringIO())
    assert not (tmp_path / "demo").exists()

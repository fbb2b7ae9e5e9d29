"""The demo's pipeline, without serving: a broken `make demo` fails CI."""

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.test import override_settings

from generation.models import GeneratedImage
from studies.models import Participant, Study
from trainer.models import Dataset, TrainingRun


@pytest.mark.slow
@pytest.mark.django_db
def test_demo_pipeline_runs_end_to_end(tmp_path, client):
    out = StringIO()
    with override_settings(MEDIA_ROOT=tmp_path / "media"):
        call_command("demo", "--output", str(tmp_path / "demo"), stdout=out)
        text = out.getvalue()
        dataset = Dataset.objects.get()
        assert dataset.num_train + dataset.num_validation == 16 and dataset.num_skipped == 0
        runs = TrainingRun.objects.all()
        # Four methods trained on one loop, each an arm of one study beside the base model.
        assert sorted(run.method for run in runs) == ["dora", "lokr", "lora", "ti"]
        assert all(run.status == TrainingRun.Status.FINISHED for run in runs)
        assert set(GeneratedImage.objects.values_list("arm", flat=True)) == {"base", "lora", "dora", "lokr", "ti"}
        study = Study.objects.get()
        assert sorted(study.arms) == ["base", "dora", "lokr", "lora", "ti"]
        assert study.status == Study.Status.OPEN
        assert study.plan["stopping"]["rule"] == "anytime" and study.plan_sha256
        assert Participant.objects.filter(study=study, finished_at__isnull=False).count() == 12
        assert (tmp_path / "demo" / "report" / "report.json").is_file()
        # The demo preregisters before its pilot; the self-contained report quotes the plan's hash.
        assert study.plan_locked_at is not None
        methods = json.loads((tmp_path / "demo" / "report" / "report.json").read_text())["methods"]
        assert f"preregistered (sha256 {study.plan_sha256}" in methods and "no deviations" in methods
        html = (tmp_path / "demo" / "report" / "report.html").read_text()
        # Five arms: the Bradley-Terry ranking of them comes above the pairwise forest plot.
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

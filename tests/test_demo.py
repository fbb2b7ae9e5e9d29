"""The demo's pipeline, without serving: a broken `make demo` fails CI."""

from io import StringIO

import pytest
from django.core.management import call_command

from trainer.models import Dataset


@pytest.mark.slow
@pytest.mark.django_db
def test_demo_pipeline_runs_end_to_end(tmp_path):
    out = StringIO()
    call_command("demo", "--output", str(tmp_path), stdout=out)
    text = out.getvalue()
    assert (tmp_path / "tiny-model" / "model_index.json").is_file()
    assert (tmp_path / "dataset" / "manifest.json").is_file()
    dataset = Dataset.objects.get()
    assert dataset.num_train + dataset.num_validation == 16 and dataset.num_skipped == 0
    assert "dataset" in text

"""Migration 0003: generation runs recorded as "pending" become "queued", the one name for waiting runs."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("generation", "0002_generationrun_effects")]
AFTER = [("generation", "0003_house_status_queued")]


@pytest.mark.django_db(transaction=True)
def test_pending_runs_become_queued_and_back():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    apps = executor.loader.project_state(BEFORE).apps
    prompt_set = apps.get_model("generation", "PromptSet").objects.create(name="p")
    run_model = apps.get_model("generation", "GenerationRun")
    waiting = run_model.objects.create(prompt_set=prompt_set, status="pending").pk
    finished = run_model.objects.create(prompt_set=prompt_set, status="finished").pk

    executor = MigrationExecutor(connection)
    executor.migrate(AFTER)
    run_model = executor.loader.project_state(AFTER).apps.get_model("generation", "GenerationRun")
    assert dict(run_model.objects.values_list("pk", "status")) == {waiting: "queued", finished: "finished"}

    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)  # reversible
    run_model = executor.loader.project_state(BEFORE).apps.get_model("generation", "GenerationRun")
    assert run_model.objects.get(pk=waiting).status == "pending"
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

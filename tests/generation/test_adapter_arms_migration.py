"""Migration 0004: a run's lora/ti config keys and its images' lora/ti parameters become adapter arms."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("generation", "0003_house_status_queued")]
AFTER = [("generation", "0004_adapter_arms")]
OLD_CONFIG = {
    "model": "/m",
    "arms": ["base", "lora", "ti"],
    "seeds": [0],
    "lora": "/runs/lora",
    "lora_scale": 0.5,
    "ti": "/runs/ti/learned_embeds.safetensors",
    "token": "<t>",
    "ti_initializer": "style",
}
OLD_PARAMETERS = {
    "base": {"steps": 2},
    "lora": {"steps": 2, "lora": "/runs/lora", "lora_format": "kohya", "lora_scale": 0.5},
    "ti": {"steps": 2, "ti": "/runs/ti/learned_embeds.safetensors", "token": "<t>"},
}


def models_at(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(target)
    apps = executor.loader.project_state(target).apps
    return apps.get_model("generation", "GenerationRun"), apps.get_model("generation", "GeneratedImage")


@pytest.mark.django_db(transaction=True)
def test_lora_and_ti_keys_become_adapter_arms_and_back(tiny_model_dir):
    run_model, image_model = models_at(BEFORE)
    prompt_set = run_model._meta.get_field("prompt_set").related_model.objects.create(name="p")
    prompt = prompt_set.prompts.create(landmark="L", text="t")
    run = run_model.objects.create(prompt_set=prompt_set, arms=OLD_CONFIG["arms"], config=OLD_CONFIG)
    for arm, parameters in OLD_PARAMETERS.items():
        image_model.objects.create(
            run=run,
            arm=arm,
            prompt=prompt,
            seed=0,
            rendered_prompt="t",
            image="x.png",
            width=1,
            height=1,
            parameters=parameters,
        )

    run_model, image_model = models_at(AFTER)
    config = run_model.objects.get().config
    assert config == {
        "model": "/m",
        "arms": ["base", "lora", "ti"],
        "seeds": [0],
        "adapters": [
            {"name": "lora", "path": "/runs/lora", "method": "lora", "format": "kohya", "token": None,
             "initializer": None, "scale": 0.5},
            {"name": "ti", "path": "/runs/ti/learned_embeds.safetensors", "method": "ti", "format": "embedding",
             "token": "<t>", "initializer": "style", "scale": 1.0},
        ],
    }  # fmt: skip
    parameters = dict(image_model.objects.values_list("arm", "parameters"))
    assert parameters == {
        "base": {"steps": 2},
        "lora": {"steps": 2, "adapter": "/runs/lora", "method": "lora", "format": "kohya", "scale": 0.5},
        "ti": {"steps": 2, "adapter": "/runs/ti/learned_embeds.safetensors", "token": "<t>", "method": "ti",
               "format": "embedding"},
    }  # fmt: skip
    # The migrated config is one the engine reads.
    from generation.engine import GenerationConfig

    assert [
        adapter.name
        for adapter in GenerationConfig.from_dict(config | {"model": str(tiny_model_dir)}).adapters
    ] == [
        "lora",
        "ti",
    ]

    run_model, image_model = models_at(BEFORE)  # reversible
    assert run_model.objects.get().config == OLD_CONFIG
    assert dict(image_model.objects.values_list("arm", "parameters")) == OLD_PARAMETERS
    models_at(MigrationExecutor(connection).loader.graph.leaf_nodes())

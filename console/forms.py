"""The console's forms: each validates what the user typed with the same rules as the engines."""

from pathlib import Path

from django import forms
from django.conf import settings

from generation.engine import GenerationConfig
from generation.models import GenerationRun, PromptSet
from peftlab.errors import UserInputError
from studies.models import Study
from trainer.engine.config import LoraTrainingConfig, TiTrainingConfig, build_config
from trainer.engine.dataset import PrepareConfig
from trainer.models import Dataset, TrainingRun


class DatasetPrepareForm(forms.Form):
    """Prepare a folder of captioned images (on the machine that runs the job) into a dataset."""

    source = forms.CharField(
        max_length=1000, help_text="Folder of name.jpg + name.txt pairs, readable by the workers."
    )
    name = forms.SlugField(max_length=100, help_text="Folder name under PEFTLAB_DATA_DIR/datasets/.")
    resolution = forms.IntegerField(initial=512, min_value=8, max_value=4096)
    val_fraction = forms.FloatField(initial=0.1, min_value=0, max_value=0.99)
    min_size = forms.IntegerField(initial=256, min_value=0)

    def clean_source(self) -> str:
        source = Path(self.cleaned_data["source"]).expanduser()
        if not source.is_dir():
            raise forms.ValidationError(f"{source} is not a folder: give the folder of captioned images.")
        return str(source.resolve())

    def clean(self) -> dict:
        cleaned = super().clean()
        if not self.errors:
            try:
                PrepareConfig(
                    resolution=cleaned["resolution"],
                    val_fraction=cleaned["val_fraction"],
                    min_size=cleaned["min_size"],
                )
            except UserInputError as error:
                raise forms.ValidationError(str(error)) from None
        return cleaned

    def job_kwargs(self) -> dict:
        """The arguments of trainer.jobs.dataset_prepare_job."""
        data = self.cleaned_data
        return {
            "source": data["source"],
            "output": str(Path(settings.PEFTLAB_DATA_DIR) / "datasets" / data["name"]),
            "resolution": data["resolution"],
            "val_fraction": data["val_fraction"],
            "min_size": data["min_size"],
        }


def user_error_to_form(build):
    """Call `build()`; a UserInputError becomes a form error with the same one-line message."""
    try:
        return build()
    except UserInputError as error:
        raise forms.ValidationError(str(error)) from None


class TrainingStartForm(forms.Form):
    """Start a LoRA or Textual Inversion run on a prepared dataset (the main hyperparameters)."""

    dataset = forms.ModelChoiceField(queryset=Dataset.objects.all())
    method = forms.ChoiceField(choices=TrainingRun.Method.choices)
    model = forms.CharField(
        max_length=1000, help_text="Local diffusers folder (or hub id) of the base model."
    )
    output_name = forms.SlugField(max_length=100, help_text="Folder name under PEFTLAB_DATA_DIR/runs/.")
    # Initial values are the engine's defaults (one source: the config dataclasses).
    epochs = forms.IntegerField(initial=LoraTrainingConfig.epochs, min_value=1)
    batch_size = forms.IntegerField(initial=LoraTrainingConfig.batch_size, min_value=1)
    learning_rate = forms.FloatField(
        required=False,
        min_value=0,
        help_text=f"Empty: the method's default ({LoraTrainingConfig.learning_rate:g} LoRA, "
        f"{TiTrainingConfig.learning_rate:g} Textual Inversion).",
    )
    resolution = forms.IntegerField(initial=LoraTrainingConfig.resolution, min_value=8)
    seed = forms.IntegerField(initial=LoraTrainingConfig.seed)
    rank = forms.IntegerField(initial=LoraTrainingConfig.rank, min_value=1, help_text="LoRA only.")
    placeholder_token = forms.CharField(required=False, help_text='Textual Inversion only, e.g. "<ghibli>".')
    initializer_token = forms.CharField(required=False, help_text="Textual Inversion only, e.g. style.")
    processes = forms.IntegerField(
        initial=1,
        min_value=1,
        max_value=64,
        help_text="Training processes on the worker's machine, one per GPU; batch size is per process.",
    )

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        options = {
            key: cleaned[key]
            for key in ("model", "epochs", "batch_size", "learning_rate", "resolution", "seed")
            if cleaned[key] is not None
        }
        if cleaned["method"] == "lora":
            options["rank"] = options["alpha"] = cleaned["rank"]
        else:
            options["placeholder_token"] = cleaned["placeholder_token"]
            options["initializer_token"] = cleaned["initializer_token"]
        cleaned["config"] = user_error_to_form(lambda: build_config(cleaned["method"], **options))
        cleaned["output"] = Path(settings.PEFTLAB_DATA_DIR) / "runs" / cleaned["output_name"]
        if cleaned["output"].exists():
            raise forms.ValidationError(f"{cleaned['output']} already exists: choose another output name.")
        return cleaned


class GenerationStartForm(forms.Form):
    """Render a prompt set with the base model and adapters from finished training runs."""

    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.all())
    model = forms.CharField(
        max_length=1000, help_text="Local diffusers folder (or hub id) of the base model."
    )
    lora_run = forms.ModelChoiceField(
        queryset=TrainingRun.objects.filter(method="lora", status="finished"), required=False
    )
    ti_run = forms.ModelChoiceField(
        queryset=TrainingRun.objects.filter(method="ti", status="finished"), required=False
    )
    # Initial values are the engine's defaults (one source: GenerationConfig).
    seeds = forms.CharField(
        initial=",".join(map(str, GenerationConfig.seeds)), help_text="Comma-separated integers."
    )
    steps = forms.IntegerField(initial=GenerationConfig.steps, min_value=1)
    size = forms.IntegerField(
        initial=GenerationConfig.width, min_value=8, help_text="Width and height in pixels."
    )
    name = forms.CharField(max_length=200, required=False)

    def clean_seeds(self) -> tuple[int, ...]:
        try:
            return tuple(int(seed) for seed in self.cleaned_data["seeds"].split(",") if seed.strip())
        except ValueError:
            raise forms.ValidationError("Seeds must be comma-separated integers, e.g. 0,1,2.") from None

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        arms, adapters = ["base"], {}
        if cleaned["lora_run"]:
            arms.append("lora")
            adapters["lora"] = adapter_file(cleaned["lora_run"], "lora")
        if cleaned["ti_run"]:
            arms.append("ti")
            adapters["ti"] = adapter_file(cleaned["ti_run"], "ti")
            adapters["token"] = cleaned["ti_run"].config.get("placeholder_token")
        cleaned["config"] = user_error_to_form(
            lambda: GenerationConfig(
                model=cleaned["model"],
                arms=tuple(arms),
                seeds=cleaned["seeds"],
                steps=cleaned["steps"],
                width=cleaned["size"],
                height=cleaned["size"],
                **adapters,
            )
        )
        return cleaned


def adapter_file(run: TrainingRun, method: str) -> str:
    """What generation loads from a finished run: LoRA's output folder, or TI's embedding file."""
    if method == "lora":
        return run.output_path
    embeddings = sorted(path for name, path in (run.files or {}).items() if name.endswith(".safetensors"))
    if not embeddings:
        raise forms.ValidationError(f"training run {run.pk} recorded no .safetensors embedding.")
    return embeddings[0]


class StudyCreateForm(forms.Form):
    """Create a draft study comparing the arms of a finished generation run."""

    generation_run = forms.ModelChoiceField(queryset=GenerationRun.objects.filter(status="finished"))
    title = forms.CharField(
        max_length=200, initial="Which image do you prefer?", help_text="Do not name the arms."
    )
    slug = forms.SlugField(max_length=100)
    attention_checks = forms.IntegerField(initial=2, min_value=0, max_value=20)
    target_participants = forms.IntegerField(initial=50, min_value=1)
    max_participants = forms.IntegerField(
        required=False,
        min_value=1,
        help_text="Admit at most this many participants, those in progress included (empty: no cap).",
    )

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if Study.objects.filter(slug=slug).exists():
            raise forms.ValidationError(f"a study with slug {slug!r} already exists; choose another.")
        return slug

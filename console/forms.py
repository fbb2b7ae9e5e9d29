"""The console's forms: each validates what the user typed with the same rules as the engines."""

from dataclasses import replace
from pathlib import Path

from django import forms
from django.conf import settings
from django.utils.html import escape

from generation.engine import MAX_ADAPTERS, AdapterArm, GenerationConfig
from generation.models import GenerationRun, PromptSet
from generation.selectors import generation_run_readiness
from peftlab.errors import UserInputError
from studies.models import EXTRA_OPTIONS, Study
from studies.selectors import COMPLETION_OUTCOMES
from studies.services import REFERENCE_QUESTIONS, generation_run_ready_check
from trainer.engine.config import (
    CONFIG_CLASSES,
    LokrTrainingConfig,
    LoraTrainingConfig,
    OftTrainingConfig,
    TiTrainingConfig,
    build_config,
)
from trainer.engine.data import CAPTION_CHUNKS, caption_tokens_measure
from trainer.engine.dataset import PrepareConfig
from trainer.models import Dataset, TrainingRun
from trainer.selectors import training_run_adapter_path


class ConsoleForm(forms.Form):
    """A form whose help texts show as typed: Django renders help_text unescaped, so "<ghibli>" would vanish."""

    def __getitem__(self, name: str) -> forms.BoundField:
        # Every rendering path (as_p, a template's form[name]) comes through here; fields are per-form copies.
        field = self.fields[name]
        if not getattr(field, "help_text_escaped", False):
            field.help_text, field.help_text_escaped = escape(field.help_text), True
        return super().__getitem__(name)


class DatasetPrepareForm(ConsoleForm):
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


def methods_with(option: str) -> str:
    """The methods whose config has `option`, by display name, for a field's help text."""
    names = dict(TrainingRun.Method.choices)
    return ", ".join(
        names[method] for method, config in CONFIG_CLASSES.items() if option in config.__dataclass_fields__
    )


class TrainingStartForm(ConsoleForm):
    """Start a run of any method on a prepared dataset (the main hyperparameters and each method's own options)."""

    # The method options below, each passed on only to the methods whose config has it (empty: the default).
    METHOD_OPTIONS = ("rank", "alpha", "dropout", "rank_dropout", "module_dropout", "factor", "block_size")

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
        help_text=f"Empty: the method's default ({LoraTrainingConfig.learning_rate:g} LoRA and the other adapters, "
        f"{TiTrainingConfig.learning_rate:g} Textual Inversion).",
    )
    resolution = forms.IntegerField(initial=LoraTrainingConfig.resolution, min_value=8)
    seed = forms.IntegerField(initial=LoraTrainingConfig.seed)
    rank = forms.IntegerField(
        required=False,
        min_value=1,
        help_text=f"{methods_with('rank')}. Empty: the method's default (LoRA, DoRA {LoraTrainingConfig.rank}; "
        f"LoHa, LoKr {LokrTrainingConfig.rank}).",
    )
    alpha = forms.FloatField(
        required=False,
        help_text=f"{methods_with('alpha')}; the update is scaled by alpha / rank. Empty: equal to the rank.",
    )
    dropout = forms.FloatField(required=False, help_text=f"{methods_with('dropout')}. Empty: 0.")
    rank_dropout = forms.FloatField(required=False, help_text=f"{methods_with('rank_dropout')}. Empty: 0.")
    module_dropout = forms.FloatField(
        required=False, help_text=f"{methods_with('module_dropout')}. Empty: 0."
    )
    factor = forms.IntegerField(
        required=False,
        help_text=f"{methods_with('factor')}: the Kronecker factor's side; empty: {LokrTrainingConfig.factor} "
        "(the most balanced split).",
    )
    block_size = forms.IntegerField(
        required=False,
        help_text=f"{methods_with('block_size')}: side of each orthogonal block; it must divide every adapted "
        f"layer's input width. Empty: {OftTrainingConfig.block_size}.",
    )
    max_caption_tokens = forms.TypedChoiceField(
        choices=[("", "Measured: the fewest that keep every caption whole")]
        + [
            (tokens, f"{tokens} ({chunks} window{'s' * (chunks > 1)} of the text encoder)")
            for tokens, chunks in CAPTION_CHUNKS.items()
        ],
        coerce=int,
        empty_value=None,
        required=False,
        help_text="Caption tokens the text encoder sees; a longer caption loses its tail. Measured: the dataset's "
        "captions are counted with the model's tokenizer when you start.",
    )
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
        fields = CONFIG_CLASSES[cleaned["method"]].__dataclass_fields__
        options |= {
            name: cleaned[name]
            for name in self.METHOD_OPTIONS
            if name in fields and cleaned[name] is not None
        }
        if "alpha" in fields and "rank" in options and "alpha" not in options:
            options["alpha"] = float(options["rank"])
        if cleaned["method"] == "ti":
            options["placeholder_token"] = cleaned["placeholder_token"]
            options["initializer_token"] = cleaned["initializer_token"]
        if cleaned["max_caption_tokens"] is not None:
            options["max_caption_tokens"] = cleaned["max_caption_tokens"]
        cleaned["config"] = user_error_to_form(lambda: build_config(cleaned["method"], **options))
        if cleaned["max_caption_tokens"] is None:
            # Measured once the rest is valid: it loads the model's tokenizer and reads every caption.
            longest, tokens = user_error_to_form(
                lambda: caption_tokens_measure(cleaned["model"], Path(cleaned["dataset"].path))
            )
            self.notice = f"The longest caption has {longest} tokens: max caption tokens {tokens}."
            cleaned["config"] = replace(cleaned["config"], max_caption_tokens=tokens)
        cleaned["output"] = Path(settings.PEFTLAB_DATA_DIR) / "runs" / cleaned["output_name"]
        if cleaned["output"].exists():
            raise forms.ValidationError(f"{cleaned['output']} already exists: choose another output name.")
        return cleaned


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files from one input (Django's documented pattern); the cleaned value is a list."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None) -> list:
        if isinstance(data, list | tuple):
            return [super(MultipleFileField, self).clean(item, initial) for item in data]
        return [] if not data else [super().clean(data, initial)]


class PromptSetUploadForm(ConsoleForm):
    """Upload a prompt set: a JSON or CSV file, and the reference images its prompts name."""

    file = forms.FileField(
        help_text='JSON ([{"landmark": ..., "text": ..., "reference_images": ["eiffel1.jpg"]}]) or CSV with '
        "columns landmark, text[, negative_prompt, template_<arm>, reference_images separated by ;]."
    )
    reference_images = MultipleFileField(
        required=False, help_text="The images the prompts' reference_images name (matched by file name)."
    )
    name = forms.SlugField(
        max_length=100, required=False, help_text='Empty: the file\'s "name", else its file name.'
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if not upload.name.lower().endswith((".json", ".csv")):
            raise forms.ValidationError(f"{upload.name}: a prompt file ends in .json or .csv.")
        return upload

    def upload_kwargs(self) -> dict:
        """The arguments of generation.services.prompt_set_upload."""
        data = self.cleaned_data
        return {
            "file_name": data["file"].name,
            "content": data["file"].read(),
            "images": {image.name: image.read() for image in data["reference_images"]},
            "name": data["name"] or None,
        }


class AdapterRunsField(forms.ModelMultipleChoiceField):
    """Finished training runs of any method, each listed with its method."""

    def label_from_instance(self, run: TrainingRun) -> str:
        return f"{run.get_method_display()} run {run.pk}: {Path(run.output_path).name}"


class GenerationStartForm(ConsoleForm):
    """Render a prompt set with the base model and up to six adapters from finished training runs."""

    prompt_set = forms.ModelChoiceField(
        queryset=PromptSet.objects.all(),
        help_text="Upload your own, or add the built-in landmark set, on the Prompt sets page.",
    )
    model = forms.CharField(
        max_length=1000, help_text="Local diffusers folder (or hub id) of the base model."
    )
    adapter_runs = AdapterRunsField(
        queryset=TrainingRun.objects.filter(status=TrainingRun.Status.FINISHED),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=f"Up to {MAX_ADAPTERS} finished training runs of any method; each is an arm beside the base "
        "model, named after its method (and its run number when two share one).",
    )
    # Initial values are the engine's defaults (one source: GenerationConfig).
    seeds = forms.CharField(
        initial=",".join(map(str, GenerationConfig.seeds)), help_text="Comma-separated integers."
    )
    steps = forms.IntegerField(initial=GenerationConfig.steps, min_value=1)
    size = forms.IntegerField(
        required=False,
        min_value=8,
        help_text="Width and height in pixels; blank: the model's native size (512 for SD 1.x, 1024 for SDXL).",
    )
    name = forms.CharField(max_length=200, required=False)

    def clean_seeds(self) -> tuple[int, ...]:
        try:
            return tuple(int(seed) for seed in self.cleaned_data["seeds"].split(",") if seed.strip())
        except ValueError:
            raise forms.ValidationError("Seeds must be comma-separated integers, e.g. 0,1,2.") from None

    def clean_adapter_runs(self) -> list[TrainingRun]:
        runs = sorted(self.cleaned_data["adapter_runs"], key=lambda run: run.pk)
        if len(runs) > MAX_ADAPTERS:
            raise forms.ValidationError(
                f"{len(runs)} runs chosen; a generation run compares the base model with at most {MAX_ADAPTERS}."
            )
        return runs

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        runs = cleaned["adapter_runs"]
        methods = [run.method for run in runs]

        def build() -> GenerationConfig:
            adapters = tuple(
                AdapterArm.detect(
                    run.method if methods.count(run.method) == 1 else f"{run.method}-{run.pk}",
                    training_run_adapter_path(run=run),
                )
                for run in runs
            )
            return GenerationConfig(
                model=cleaned["model"],
                arms=("base", *(adapter.name for adapter in adapters)),
                adapters=adapters,
                seeds=cleaned["seeds"],
                steps=cleaned["steps"],
                width=cleaned["size"] or 0,
                height=cleaned["size"] or 0,
            )

        cleaned["config"] = user_error_to_form(build)
        return cleaned


def generation_run_choice_label(run: GenerationRun) -> str:
    """A run as the study form lists it, saying when it cannot be used yet ("still rendering (3 of 12 images)")."""
    reason = generation_run_readiness(run=run)
    name = f"Generation {run.pk}" + (f": {run.name}" if run.name else "")
    return f"{name} (arms {', '.join(run.arms)}){f' — {reason}' if reason else ''}"


class StudyRunForm(ConsoleForm):
    """Step one of the study builder: which generation run's images the study compares."""

    generation_run = forms.TypedChoiceField(
        coerce=int,
        help_text="Runs still rendering are listed but can be used only once they have finished.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        runs = GenerationRun.objects.exclude(status=GenerationRun.Status.FAILED).select_related("prompt_set")
        self.runs = {run.pk: run for run in runs}
        self.fields["generation_run"].choices = [
            (pk, generation_run_choice_label(r)) for pk, r in self.runs.items()
        ]

    def clean_generation_run(self) -> GenerationRun:
        run = self.runs[self.cleaned_data["generation_run"]]
        user_error_to_form(lambda: generation_run_ready_check(run=run))
        return run


class CompletionFields(ConsoleForm):
    """Completion codes and redirects: the finished participant's, and one per other outcome (optional)."""

    OUTCOME_HELP = {
        "failed_attention": "failed the attention checks",
        "declined": "declined consent",
        "full": "arrived after the study filled up",
    }
    completion_code = forms.CharField(
        max_length=50, required=False, help_text="Shown to those who finish (empty: a random code)."
    )
    completion_redirect_url = forms.URLField(
        assume_scheme="https",
        max_length=500,
        required=False,
        help_text="e.g. https://app.prolific.com/submissions/complete (cc=<code> is appended); empty shows the code.",
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for outcome, who in self.OUTCOME_HELP.items():
            self.fields[f"code_{outcome}"] = forms.CharField(
                max_length=50, required=False, label=f"Code for those who {who}"
            )
            self.fields[f"redirect_{outcome}"] = forms.URLField(
                assume_scheme="https", max_length=500, required=False, label=f"Redirect for those who {who}"
            )

    def completion_codes(self) -> dict[str, dict[str, str]]:
        """Study.completion_codes from the per-outcome fields (the finished outcome is the study's own code)."""
        data = self.cleaned_data
        return {
            outcome: {"code": data[f"code_{outcome}"], "redirect_url": data[f"redirect_{outcome}"]}
            for outcome in COMPLETION_OUTCOMES
            if data.get(f"code_{outcome}") or data.get(f"redirect_{outcome}")
        }

    @classmethod
    def initial_from(cls, study: Study) -> dict:
        """The fields' values for an existing study."""
        initial = {
            "completion_code": study.completion_code,
            "completion_redirect_url": study.completion_redirect_url,
        }
        for outcome, entry in study.completion_codes.items():
            initial[f"code_{outcome}"] = entry.get("code", "")
            initial[f"redirect_{outcome}"] = entry.get("redirect_url", "")
        return initial


CUSTOM_QUESTIONS = 3  # blank custom-question slots in the builder
DEFAULT_QUESTION_LABELS = {"artwork": "Artwork", "style": "Style match", "identity": "Landmark identity"}


class StudyBuildForm(CompletionFields):
    """Step two: arms and their display names, questions, attention checks, recruitment and completion."""

    title = forms.CharField(
        max_length=200,
        initial="Which image do you prefer?",
        help_text="Shown to participants: do not name the arms.",
    )
    slug = forms.SlugField(max_length=100, help_text="The participants' link is /studies/<slug>/.")
    attention_checks = forms.IntegerField(
        initial=2,
        min_value=0,
        max_value=20,
        help_text='Instructed-response pages ("choose the image on the left").',
    )
    target_participants = forms.IntegerField(initial=50, min_value=1, help_text="The sample size you plan.")
    max_participants = forms.IntegerField(
        required=False,
        min_value=1,
        help_text="Admit at most this many (in progress included); empty: no cap.",
    )

    def __init__(self, *args, run: GenerationRun, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.run = run
        self.fields["arms"] = forms.MultipleChoiceField(
            choices=[(arm, arm) for arm in run.arms],
            initial=list(run.arms),
            widget=forms.CheckboxSelectMultiple,
            help_text="Every prompt is shown for every pair of the arms ticked (two or more).",
        )
        for arm in run.arms:
            self.fields[f"arm_label_{arm}"] = forms.CharField(
                max_length=100, required=False, label=f"Display name of {arm}",
                help_text="In reports and the console; never shown to participants.",
            )  # fmt: skip
        self.fields["questions"] = forms.MultipleChoiceField(
            choices=[(q["key"], q["text"]) for q in REFERENCE_QUESTIONS],
            initial=[q["key"] for q in REFERENCE_QUESTIONS],
            required=False,
            widget=forms.CheckboxSelectMultiple,
            label="The reference study's questions",
        )
        for question in REFERENCE_QUESTIONS:
            self.fields[f"question_label_{question['key']}"] = forms.CharField(
                max_length=100, required=False, initial=DEFAULT_QUESTION_LABELS.get(question["key"], ""),
                label=f"Display name of {question['key']}",
            )  # fmt: skip
        for number in range(1, CUSTOM_QUESTIONS + 1):
            prefix = f"custom_{number}_"
            self.fields[prefix + "text"] = forms.CharField(
                required=False, widget=forms.Textarea(attrs={"rows": 2}), label=f"Custom question {number}: wording",
                help_text="Leave empty for none. Do not name the arms.",
            )  # fmt: skip
            self.fields[prefix + "key"] = forms.SlugField(
                max_length=50, required=False, label=f"Custom question {number}: key",
                help_text="A short name for exports, e.g. realism.",
            )  # fmt: skip
            self.fields[prefix + "label"] = forms.CharField(
                max_length=100, required=False, label=f"Custom question {number}: display name"
            )
            self.fields[prefix + "options"] = forms.MultipleChoiceField(
                choices=[("both", "Both equally"), ("neither", "Neither")], required=False,
                widget=forms.CheckboxSelectMultiple, label=f"Custom question {number}: extra answers",
            )  # fmt: skip
            self.fields[prefix + "references"] = forms.BooleanField(
                required=False, label=f"Custom question {number}: show the prompt's reference images"
            )

    def clean_slug(self) -> str:
        slug = self.cleaned_data["slug"]
        if Study.objects.filter(slug=slug).exists():
            raise forms.ValidationError(f"a study with slug {slug!r} already exists; choose another.")
        return slug

    def clean_arms(self) -> list[str]:
        arms = self.cleaned_data["arms"]
        if len(arms) < 2:
            raise forms.ValidationError("Tick two or more arms: a study compares pairs.")
        return [arm for arm in self.run.arms if arm in arms]  # the run's order, not the browser's

    def question_specs(self) -> list[dict]:
        """The questions ticked and written, as study_create_from_generation takes them."""
        data = self.cleaned_data
        specs = [
            dict(q) | {"label": data[f"question_label_{q['key']}"].strip()}
            for q in REFERENCE_QUESTIONS
            if q["key"] in data["questions"]
        ]
        for number in range(1, CUSTOM_QUESTIONS + 1):
            prefix = f"custom_{number}_"
            if data[prefix + "text"].strip():
                specs.append(
                    {
                        "key": data[prefix + "key"],
                        "text": data[prefix + "text"].strip(),
                        "label": data[prefix + "label"].strip(),
                        "options": [option for option in EXTRA_OPTIONS if option in data[prefix + "options"]],
                        "show_references": data[prefix + "references"],
                    }
                )
        return specs

    def clean(self) -> dict:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        for number in range(1, CUSTOM_QUESTIONS + 1):
            prefix = f"custom_{number}_"
            if cleaned[prefix + "text"].strip() and not cleaned[prefix + "key"]:
                self.add_error(prefix + "key", "Give the custom question a key, e.g. realism.")
        if self.errors:
            return cleaned
        specs = self.question_specs()
        keys = [spec["key"] for spec in specs]
        if not specs:
            raise forms.ValidationError("Ask at least one question: tick a reference question or write one.")
        if len(set(keys)) != len(keys):
            raise forms.ValidationError(f"Question keys must differ; got {', '.join(keys)}.")
        return cleaned

    def study_options(self) -> dict:
        """The keyword arguments of study_create_from_generation."""
        data = self.cleaned_data
        return {
            "run": self.run,
            "arms": data["arms"],
            "arm_labels": {arm: data[f"arm_label_{arm}"] for arm in data["arms"]},
            "questions": self.question_specs(),
            "title": data["title"],
            "slug": data["slug"],
            "attention_checks": data["attention_checks"],
            "target_participants": data["target_participants"],
            "max_participants": data["max_participants"],
            "completion_code": data["completion_code"],
            "completion_redirect_url": data["completion_redirect_url"],
            "completion_codes": self.completion_codes(),
        }

    def groups(self) -> list[tuple[str, list]]:
        """The fields in the order and sections the page shows them."""
        names = {
            "Study": ["title", "slug"],
            "Arms": ["arms", *[f"arm_label_{arm}" for arm in self.run.arms]],
            "Questions": [
                "questions",
                *[f"question_label_{q['key']}" for q in REFERENCE_QUESTIONS],
                *[name for name in self.fields if name.startswith("custom_")],
            ],
            "Attention and recruitment": ["attention_checks", "target_participants", "max_participants"],
            "Completion": ["completion_code", "completion_redirect_url", *[
                name for name in self.fields if name.startswith(("code_", "redirect_"))
            ]],
        }  # fmt: skip
        return [(legend, [self[name] for name in fields]) for legend, fields in names.items()]


class StudySettingsForm(CompletionFields):
    """What may change on an existing study: title, recruitment, completion, and arm and question display names."""

    field_order = ["title", "consent_text", "instructions", "target_participants", "max_participants"]

    title = forms.CharField(max_length=200, help_text="Shown to participants: do not name the arms.")
    consent_text = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5}),
        help_text="The consent page's text; {duration} shows the expected time, from the study's pages and "
        "the pilots' median time per page.",
    )
    instructions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 5}), help_text="Shown once, before the first pair."
    )
    target_participants = forms.IntegerField(min_value=1)
    max_participants = forms.IntegerField(
        required=False,
        min_value=1,
        help_text="Admit at most this many (in progress included); empty: no cap.",
    )

    def __init__(self, *args, study: Study, **kwargs) -> None:
        initial = {
            "title": study.title,
            "consent_text": study.consent_text,
            "instructions": study.instructions,
            "target_participants": study.target_participants,
            "max_participants": study.max_participants,
        } | CompletionFields.initial_from(study)
        for arm in study.arms:
            initial[f"arm_label_{arm}"] = study.arm_labels.get(arm, "")
        questions = list(study.questions.all())
        for question in questions:
            initial[f"question_label_{question.key}"] = question.label
        super().__init__(*args, initial=initial, **kwargs)
        self.study = study
        for arm in study.arms:
            self.fields[f"arm_label_{arm}"] = forms.CharField(
                max_length=100, required=False, label=f"Display name of {arm}"
            )
        for question in questions:
            self.fields[f"question_label_{question.key}"] = forms.CharField(
                max_length=100, required=False, label=f"Display name of question {question.key}"
            )
        if study.plan_locked_at:
            self.fields["deviation_reason"] = forms.CharField(
                max_length=500,
                required=False,
                label="Reason for departing from the analysis plan",
                help_text="Only to change what the locked plan fixed (the target participants): the change and "
                "this reason are recorded as a deviation and reported with the results.",
            )

    def settings(self) -> dict:
        """The keyword arguments of study_settings_update."""
        data = self.cleaned_data
        return {
            "study": self.study,
            "title": data["title"],
            "consent_text": data["consent_text"],
            "instructions": data["instructions"],
            "target_participants": data["target_participants"],
            "max_participants": data["max_participants"],
            "completion_code": data["completion_code"],
            "completion_redirect_url": data["completion_redirect_url"],
            "completion_codes": self.completion_codes(),
            "arm_labels": {arm: data[f"arm_label_{arm}"] for arm in self.study.arms},
            "question_labels": {
                name.removeprefix("question_label_"): value
                for name, value in data.items()
                if name.startswith("question_label_")
            },
            "deviate": data.get("deviation_reason", ""),
        }

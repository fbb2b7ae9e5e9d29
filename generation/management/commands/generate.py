"""`manage.py generate --model DIR [--adapter NAME=PATH ...] [--lora X] [--ti FILE]`: render a comparison run."""

from django.core.management.base import CommandError
from django.urls import reverse

from generation.engine import BASE_ARM, MAX_ADAPTERS, SCHEDULERS, AdapterArm, GenerationConfig
from generation.selectors import prompt_set_get
from generation.services import BUILTIN_SET_NAME, generation_run_render, prompt_set_install_builtin
from peftlab.commands import PeftlabCommand
from peftlab.progress import TqdmProgress


def int_list(text: str) -> tuple[int, ...]:
    """'0,1,2' -> (0, 1, 2)."""
    try:
        return tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise CommandError(f"--seeds must be integers separated by commas, got {text!r}.") from None


def named_values(items: list[str] | None, option: str) -> dict[str, str]:
    """['NAME=VALUE', ...] -> {NAME: VALUE}; a malformed or repeated NAME is refused."""
    values: dict[str, str] = {}
    for item in items or []:
        name, equals, value = item.partition("=")
        if not equals or not name.strip() or not value.strip():
            raise CommandError(f"{option} takes NAME=VALUE, got {item!r}.")
        if name.strip() in values:
            raise CommandError(f"{option} names arm {name.strip()!r} twice.")
        values[name.strip()] = value.strip()
    return values


def adapter_arms(options: dict) -> list[AdapterArm]:
    """The adapter arms of the command line: --lora and --ti (arms lora and ti), then each --adapter."""
    paths = {"lora": options["lora"], "ti": options["ti"]}
    paths = {name: path for name, path in paths.items() if path}
    for name, path in named_values(options["adapter"], "--adapter").items():
        if name in paths:
            raise CommandError(
                f"arm {name!r} is given twice (--{name} is the short form of --adapter {name}=PATH)."
            )
        paths[name] = path
    settings = {
        "token": named_values(options["adapter_token"], "--adapter-token"),
        "initializer": named_values(options["adapter_initializer"], "--adapter-initializer"),
        "scale": named_values(options["adapter_scale"], "--adapter-scale"),
    }
    for short, setting, arm in (
        ("token", "token", "ti"),
        ("ti_initializer", "initializer", "ti"),
        ("lora_scale", "scale", "lora"),
    ):
        if options[short] is None:
            continue
        if arm not in paths or arm in settings[setting]:
            raise CommandError(
                f"--{short.replace('_', '-')} needs --{arm} and no other {setting} for arm {arm}."
            )
        settings[setting][arm] = str(options[short])
    for setting, values in settings.items():
        unknown = sorted(set(values) - set(paths))
        if unknown:
            raise CommandError(f"a {setting} is given for arm {unknown[0]!r}, which no --adapter names.")
    try:
        scale = {name: float(value) for name, value in settings["scale"].items()}
    except ValueError:
        raise CommandError(f"--adapter-scale takes NAME=NUMBER, got {settings['scale']}.") from None
    return [
        AdapterArm.detect(
            name,
            path,
            token=settings["token"].get(name),
            initializer=settings["initializer"].get(name),
            scale=scale.get(name, 1.0),
        )
        for name, path in paths.items()
    ]


def size(text: str) -> tuple[int, int]:
    """'512' -> (512, 512); '640x512' -> (640, 512) as width x height."""
    try:
        parts = [int(item) for item in text.lower().split("x")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise CommandError(f"--size must be N or WxH, got {text!r}.")
    return parts[0], parts[-1]


class Command(PeftlabCommand):
    help = (
        "Render every prompt x seed of a prompt set for each arm (the base model and up to six adapters of "
        "any method) under identical seeds."
    )

    def add_arguments(self, parser):
        parser.add_argument("--model", required=True, help="Base model: a diffusers folder (or hub id).")
        parser.add_argument(
            "--adapter",
            action="append",
            metavar="NAME=PATH",
            help=f"An adapter arm (repeatable, up to {MAX_ADAPTERS} in all): a LoRA or DoRA (diffusers file or "
            "folder, kohya file), a peft adapter folder of any type (LoRA, DoRA, LoHa, LoKr, OFT), a TI embedding, "
            "or a peftlab run's output folder (e.g. run/best).",
        )
        parser.add_argument(
            "--adapter-token",
            action="append",
            metavar="NAME=TOKEN",
            help="The token of a TI arm (default: the token the file names, else <NAME>).",
        )
        parser.add_argument(
            "--adapter-initializer",
            action="append",
            metavar="NAME=WORD",
            help="The word a TI arm's vector started from (default: read from the file or its run.json).",
        )
        parser.add_argument(
            "--adapter-scale",
            action="append",
            metavar="NAME=X",
            help="Multiplier of a LoRA, DoRA, LoHa or LoKr arm's update (default 1).",
        )
        parser.add_argument(
            "--template",
            action="append",
            metavar="NAME=TEMPLATE",
            help='An arm\'s prompt template with {prompt} (and {token} for TI), e.g. dora="{prompt}, watercolor".',
        )
        parser.add_argument("--lora", help="Short for --adapter lora=PATH.")
        parser.add_argument("--ti", help="Short for --adapter ti=PATH.")
        parser.add_argument("--token", help="Short for --adapter-token ti=TOKEN, e.g. '<ghibli>'.")
        parser.add_argument(
            "--prompts", default=BUILTIN_SET_NAME, help="Prompt set name (default: landmarks)."
        )
        seeds = parser.add_mutually_exclusive_group()
        # Defaults come from GenerationConfig, the one place they are declared.
        seeds.add_argument(
            "--seeds",
            default=",".join(map(str, GenerationConfig.seeds)),
            help="Seeds, comma-separated (default %(default)s).",
        )
        seeds.add_argument("--images-per-prompt", type=int, help="N images per prompt: seeds 0..N-1.")
        parser.add_argument(
            "--arms",
            help=f"Comma-separated: {BASE_ARM} and the adapter arms, in order (default: base + all given).",
        )
        parser.add_argument("--steps", type=int, default=GenerationConfig.steps)
        parser.add_argument("--guidance", type=float, default=GenerationConfig.guidance)
        parser.add_argument(
            "--scheduler", default=GenerationConfig.scheduler, help=f"One of {', '.join(SCHEDULERS)}."
        )
        parser.add_argument(
            "--size",
            default="0",
            help="N or WxH pixels (default: the model's native size, 512 for SD 1.x, 1024 for SDXL).",
        )
        parser.add_argument("--batch-size", type=int, default=GenerationConfig.batch_size)
        parser.add_argument(
            "--dtype", default=GenerationConfig.dtype, help="auto, float32, float16 or bfloat16."
        )
        parser.add_argument("--device", default=GenerationConfig.device, help="auto, cpu, cuda, cuda:1, mps.")
        parser.add_argument("--vae-slicing", action="store_true", help="Decode a batch one image at a time.")
        parser.add_argument("--vae-tiling", action="store_true", help="Decode large images in tiles.")
        parser.add_argument(
            "--vae",
            help="A VAE folder or hub id to decode with instead of the model's (SDXL's float16-fixed VAE).",
        )
        parser.add_argument(
            "--ti-template",
            help="Short for --template ti=TEMPLATE (default: the adapter's training caption template with "
            '{prompt} for {caption}, else "An image of {token}, {prompt}").',
        )
        parser.add_argument(
            "--ti-initializer",
            help="Short for --adapter-initializer ti=WORD.",
        )
        parser.add_argument(
            "--max-caption-tokens",
            type=int,
            choices=(77, 150, 225),
            help="Prompt tokens encoded, in 75-token chunks (default: as each adapter's run trained, else 77).",
        )
        parser.add_argument("--lora-scale", type=float, help="Short for --adapter-scale lora=X.")
        parser.add_argument(
            "--safety-checker",
            choices=("on", "off"),
            default="on",
            help="on: run the model's safety checker (if it has one); a flagged image fails the run.",
        )
        parser.add_argument(
            "--lora-template", help='Short for --template lora=TEMPLATE (default "{prompt}").'
        )
        parser.add_argument(
            "--effect-threshold",
            type=float,
            default=GenerationConfig.effect_threshold,
            help="Minimum probe difference.",
        )
        parser.add_argument("--name", default="", help="A name for the run.")

    def handle(self, *args, **options):
        adapters = adapter_arms(options)
        if options["arms"]:
            arms = tuple(arm.strip() for arm in options["arms"].split(",") if arm.strip())
        else:
            arms = (BASE_ARM, *(adapter.name for adapter in adapters))
        count = options["images_per_prompt"]
        width, height = size(options["size"])
        templates = named_values(options["template"], "--template")
        for arm in ("ti", "lora"):
            if options[f"{arm}_template"]:
                if arm in templates:
                    raise CommandError(
                        f"--{arm}-template and --template {arm}=... both give arm {arm}'s template."
                    )
                templates[arm] = options[f"{arm}_template"]
        config = GenerationConfig(
            model=options["model"],
            arms=arms,
            seeds=tuple(range(count)) if count else int_list(options["seeds"]),
            steps=options["steps"],
            guidance=options["guidance"],
            scheduler=options["scheduler"],
            width=width,
            height=height,
            batch_size=options["batch_size"],
            vae_slicing=options["vae_slicing"],
            vae_tiling=options["vae_tiling"],
            dtype=options["dtype"],
            device=options["device"],
            adapters=tuple(adapters),
            templates=templates,
            effect_threshold=options["effect_threshold"],
            safety_checker=options["safety_checker"],
            max_caption_tokens=options["max_caption_tokens"],
            vae=options["vae"],
        )
        name = options["prompts"]
        prompt_set = prompt_set_install_builtin() if name == BUILTIN_SET_NAME else prompt_set_get(name=name)
        progress = TqdmProgress()
        try:
            run = generation_run_render(
                prompt_set=prompt_set, config=config, name=options["name"], progress=progress
            )
        finally:
            progress.close()
        per_arm = ", ".join(f"{arm} {run.images.filter(arm=arm).count()}" for arm in run.arms)
        self.stdout.write(
            f"Run {run.pk} finished: {run.images.count()} images ({per_arm}) in {run.timings['total_s']:.1f} s, "
            f"{run.timings['images_per_s']:.2f} images/s on {run.versions['device']} ({run.versions['dtype']})."
        )
        for arm, effect in run.effects.items():
            self.stdout.write(
                f"Effect check {arm}: probe differs by {effect:.2f} (threshold {config.effect_threshold})."
            )
        self.stdout.write(f"Gallery: {reverse('generation:run_gallery', args=[run.pk])}")

"""`manage.py make_tiny_model OUT`: build a Stable-Diffusion-shaped pipeline with random weights, offline."""

from pathlib import Path

from peftlab.commands import PeftlabCommand
from trainer.engine.tiny_model import SHAPES, TinyModelConfig
from trainer.services import tiny_model_build

SHAPE_DEFAULTS = {"tiny": (32, 64), "sd15": (768, 512), "sdxl": (768, 1024)}  # text width, image size


class Command(PeftlabCommand):
    help = "Build a tiny (or SD-1.5- or SDXL-sized) SD-1.x- or SDXL-shaped diffusers pipeline offline, with random weights."

    def add_arguments(self, parser):
        parser.add_argument(
            "output", type=Path, help="Folder to write the pipeline to (replaced if it exists)."
        )
        parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights (default 0).")
        parser.add_argument(
            "--shape",
            choices=sorted(SHAPES),
            default="tiny",
            help="tiny: for CPU tests and the demo (default); sd15: SD 1.5's sizes, sdxl: SDXL base 1.0's sizes "
            "(implies --family sdxl), for GPU benchmarks.",
        )
        parser.add_argument(
            "--family",
            choices=("sd15", "sdxl"),
            help="sd15: a StableDiffusionPipeline (the default, except with --shape sdxl); sdxl: a "
            "StableDiffusionXLPipeline with two text encoders (the second with projection; tiny: twice as wide) "
            "and a text_time UNet.",
        )
        parser.add_argument(
            "--text-width",
            type=int,
            help="(First) text encoder width; 768 matches SD-1.x and SDXL (default: 32, sd15 and sdxl: 768).",
        )
        parser.add_argument(
            "--image-size", type=int, help="Native image size in pixels (default: 64, sd15: 512, sdxl: 1024)."
        )

    def handle(self, *args, **options):
        width, size = SHAPE_DEFAULTS[options["shape"]]
        config = TinyModelConfig(
            seed=options["seed"],
            shape=options["shape"],
            family=options["family"] or ("sdxl" if options["shape"] == "sdxl" else "sd15"),
            text_width=options["text_width"] or width,
            image_size=options["image_size"] or size,
        )
        model = tiny_model_build(output=options["output"], config=config)
        self.stdout.write(
            f"Model written to {model.path}: {config.family} {config.shape} shape, {model.parameter_count:,} parameters, "
            f"vocabulary {model.vocab_size}, text width {config.text_width}, {config.image_size}px."
        )

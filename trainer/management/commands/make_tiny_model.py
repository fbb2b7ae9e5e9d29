"""`manage.py make_tiny_model OUT`: build the tiny offline Stable-Diffusion-shaped pipeline."""

from pathlib import Path

from peftlab.commands import PeftlabCommand
from trainer.engine.tiny_model import TinyModelConfig
from trainer.services import tiny_model_build


class Command(PeftlabCommand):
    help = "Build a tiny SD-1.x-shaped diffusers pipeline offline (for tests, the demo and CPU benchmarks)."

    def add_arguments(self, parser):
        parser.add_argument(
            "output", type=Path, help="Folder to write the pipeline to (replaced if it exists)."
        )
        parser.add_argument("--seed", type=int, default=0, help="Seed of the random weights (default 0).")
        parser.add_argument(
            "--text-width", type=int, default=32, help="Text encoder width; 768 matches SD-1.x (default 32)."
        )
        parser.add_argument(
            "--image-size", type=int, default=64, help="Native image size in pixels (default 64)."
        )

    def handle(self, *args, **options):
        config = TinyModelConfig(
            seed=options["seed"], text_width=options["text_width"], image_size=options["image_size"]
        )
        model = tiny_model_build(output=options["output"], config=config)
        self.stdout.write(
            f"Tiny model written to {model.path}: {model.parameter_count:,} parameters, "
            f"vocabulary {model.vocab_size}, text width {config.text_width}, {config.image_size}px."
        )

"""`manage.py prepare_dataset SRC OUT`: captioned images -> training-ready dataset."""

from pathlib import Path

from peftlab.commands import PeftlabCommand
from peftlab.progress import TqdmProgress
from trainer.engine.dataset import PrepareConfig
from trainer.services import dataset_prepare


class Command(PeftlabCommand):
    help = "Pair images with their .txt captions, square them, split train/validation and write a manifest."

    def add_arguments(self, parser):
        parser.add_argument(
            "source", type=Path, help="Folder of images (jpg/jpeg/png/webp) with .txt captions."
        )
        parser.add_argument("output", type=Path, help="Folder to write the prepared dataset to.")
        parser.add_argument(
            "--resolution", type=int, default=512, help="Side of the square images (default 512)."
        )
        parser.add_argument("--val-fraction", type=float, default=0.1, help="Share held out (default 0.1).")
        parser.add_argument(
            "--seed", type=int, default=42, help="Seed of the train/validation split (default 42)."
        )
        parser.add_argument(
            "--min-size", type=int, default=256, help="Skip images whose short side is smaller (default 256)."
        )

    def handle(self, *args, **options):
        config = PrepareConfig(
            resolution=options["resolution"],
            val_fraction=options["val_fraction"],
            seed=options["seed"],
            min_size=options["min_size"],
        )
        progress = TqdmProgress()
        try:
            dataset, prepared = dataset_prepare(
                source=options["source"], output=options["output"], config=config, progress=progress
            )
        finally:
            progress.close()
        self.stdout.write(f"Prepared dataset {dataset.path}")
        rows = [
            ("pairs", len(prepared.pairs)),
            ("train", len(prepared.train)),
            ("validation", len(prepared.validation)),
            ("skipped", len(prepared.skipped)),
        ]
        rows += [(f"  {reason}", count) for reason, count in sorted(prepared.reasons.items())]
        width = max(len(label) for label, _ in rows)
        for label, count in rows:
            self.stdout.write(f"{label:<{width}}  {count:>6}")
        self.stdout.write(
            f"manifest  {prepared.path / 'manifest.json'} (sha256 {prepared.manifest_sha256[:12]})"
        )

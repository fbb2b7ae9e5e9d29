"""The shared body of `train`, `train_lora` and `train_ti`: options from the config dataclasses, then the services."""

import json
from pathlib import Path

from peftlab.commands import PeftlabCommand
from peftlab.progress import Progress, TqdmProgress
from trainer.engine.config import CONFIG_CLASSES, add_config_arguments, build_config, read_config_file
from trainer.engine.distributed import is_main_process
from trainer.services import training_join, training_run_create, training_run_execute


class TrainingCommand(PeftlabCommand):
    """Train one method: `method` set by a subclass, or (empty) chosen with --method."""

    method = ""

    def add_arguments(self, parser):
        if not self.method:
            parser.add_argument(
                "--method", required=True, choices=list(CONFIG_CLASSES), help="What to train."
            )
        parser.add_argument(
            "--data", type=Path, required=True, help="A prepared dataset folder (prepare_dataset)."
        )
        parser.add_argument(
            "--output", type=Path, required=True, help="Folder for weights, checkpoint and metrics."
        )
        parser.add_argument("--config", type=Path, help="TOML or JSON file of options; flags override it.")
        parser.add_argument(
            "--resume", action="store_true", help="Continue the run in --output from its checkpoint."
        )
        classes = [CONFIG_CLASSES[self.method]] if self.method else list(CONFIG_CLASSES.values())
        add_config_arguments(parser, *classes)

    def handle(self, *args, **options):
        method = self.method or options["method"]
        file_values = read_config_file(options["config"]) if options.get("config") else {}
        # Every method's options are parsed; one the chosen method lacks is refused by build_config.
        names = {name for config in CONFIG_CLASSES.values() for name in config.__dataclass_fields__}
        config = build_config(
            method, file_values, **{name: options[name] for name in names if name in options}
        )
        if not is_main_process():
            training_join(
                dataset_dir=options["data"], output=options["output"], config=config, resume=options["resume"]
            )
            return
        run = training_run_create(
            method=method,
            dataset_dir=options["data"],
            output=options["output"],
            config=config,
            resume=options["resume"],
        )
        bar = TqdmProgress()

        def report(progress: Progress) -> None:
            # Steps drive the bar; at each epoch's end it closes so the engine's log line stands alone.
            if progress.stage == "epoch":
                bar.close()
            else:
                bar(progress)

        try:
            run = training_run_execute(run=run, progress=report)
        finally:
            bar.close()
        self.stdout.write(
            f"Training run {run.pk} finished: best epoch {run.best_epoch} "
            f"(validation loss {run.best_val_loss:.5f}){', stopped early' if run.stopped_early else ''}."
        )
        for name, path in run.files.items():
            self.stdout.write(f"  {name:<34} {path}")
        record = json.loads(Path(run.files["run.json"]).read_text(encoding="utf-8"))
        if record["captions_truncated"]:
            self.stdout.write(
                f"{record['captions_truncated']} of {record['captions']} captions were longer than "
                f"--max-caption-tokens {record['max_caption_tokens']} allows and lost their tail; "
                "see docs/training.md, Long captions."
            )

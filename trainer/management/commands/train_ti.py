"""`manage.py train_ti --data DATASET --output OUT --placeholder-token TOKEN --initializer-token WORD`."""

from trainer.management.commands._training import TrainingCommand


class Command(TrainingCommand):
    help = "Train a Textual Inversion embedding on a prepared dataset (diffusers and A1111 files, metrics)."
    method = "ti"

"""`manage.py train_lora --data DATASET --output OUT`: train a LoRA on the UNet."""

from trainer.management.commands._training import TrainingCommand


class Command(TrainingCommand):
    help = "Train a LoRA adapter on a prepared dataset (diffusers and kohya files, metrics, checkpoints)."
    method = "lora"

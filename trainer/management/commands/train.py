"""`manage.py train --method {lora,dora,loha,lokr,oft,ti} --data DATASET --output OUT`: train any method."""

from trainer.management.commands._training import TrainingCommand


class Command(TrainingCommand):
    help = (
        "Train LoRA, DoRA, LoHa, LoKr, OFT or Textual Inversion on a prepared dataset through the one loop "
        "(weights in every format the method loads from, proven at save time; metrics, checkpoints)."
    )

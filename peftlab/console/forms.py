"""The console's forms: each validates what the user typed with the same rules as the engines."""

from pathlib import Path

from django import forms
from django.conf import settings

from peftlab.errors import UserInputError
from trainer.engine.dataset import PrepareConfig


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

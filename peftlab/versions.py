"""Versions of Python and of the packages that decide a run's numbers, recorded with every run."""

import platform
from importlib.metadata import PackageNotFoundError, version

ML_PACKAGES = ("torch", "diffusers", "transformers", "peft", "accelerate", "safetensors", "numpy", "pillow")


def package_versions(names: tuple[str, ...] = ML_PACKAGES) -> dict[str, str]:
    """Python's version and each installed package's ("not installed" for a missing one)."""
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = "not installed"
    return versions

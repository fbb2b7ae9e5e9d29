"""The training target: the loss is zero for a UNet that predicts the true noise (or velocity), not latents."""

from types import SimpleNamespace

import pytest
import torch

from peftlab.progress import ignore_progress
from trainer.engine.config import build_config
from trainer.engine.loop import Trainer


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_loss_vanishes_only_for_the_true_target(tmp_path, prepared_dir, fast_options, prediction_type):
    from diffusers import DDPMScheduler

    trainer = Trainer(
        prepared_dir, tmp_path / "out", build_config("lora", **fast_options), False, ignore_progress, None
    )
    scheduler = DDPMScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, prediction_type=prediction_type
    )
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(4, 4, 8, 8, generator=generator)
    noise = torch.randn(4, 4, 8, 8, generator=generator)
    timesteps = torch.tensor([10, 300, 600, 990])
    alpha_bar = scheduler.alphas_cumprod[timesteps].view(-1, 1, 1, 1)

    def oracle(answer):
        """A UNet that knows the clean latents: from the noisy input it recovers the noise exactly."""

        def unet(noisy, _timesteps, _states):
            epsilon = (noisy - alpha_bar.sqrt() * latents) / (1 - alpha_bar).sqrt()
            return SimpleNamespace(sample=answer(epsilon))

        return unet

    velocity = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * latents
    true_target = (lambda epsilon: epsilon) if prediction_type == "epsilon" else (lambda epsilon: velocity)
    trainer.components = SimpleNamespace(noise_scheduler=scheduler, unet=None)
    trainer.module = oracle(true_target)
    assert trainer.loss(latents, None, noise, timesteps).max() < 1e-6
    # A UNet that returns the clean latents (what a latents target would teach) is far off the target.
    trainer.module = oracle(lambda epsilon: latents)
    assert trainer.loss(latents, None, noise, timesteps).min() > 0.1

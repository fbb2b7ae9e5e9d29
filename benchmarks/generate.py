"""Benchmark: images/s of peftlab's generation path against a plain one-image-at-a-time diffusers loop.

Same model, prompts, steps, guidance, scheduler and size on both sides. peftlab's path batches prompts,
runs in half precision on a GPU (dtype auto) and uses SDPA; the plain loop renders one image per call in
the dtype a plain `from_pretrained` gives (float32), as the reference notebook did. Run:
    .venv/bin/python benchmarks/generate.py                       # tiny model, CPU, 64x64
    .venv/bin/python manage.py make_tiny_model var/sd15 --shape sd15   # SD-1.5-shaped random weights, offline
    .venv/bin/python benchmarks/generate.py --model var/sd15 --size 512 --steps 30 --images 32   # on a GPU
    .venv/bin/python benchmarks/generate.py --adapters    # also: what five loaded adapters cost other arms
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from generation.engine import SCHEDULERS, AdapterArm, GenerationConfig, PromptItem, Renderer  # noqa: E402
from trainer.engine.families import detect_family  # noqa: E402
from trainer.engine.tiny_model import TinyModelConfig, build_tiny_model  # noqa: E402


def synchronize(device: str) -> None:
    """Wait for queued GPU work, so wall-clock times cover it."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peftlab_images_per_second(
    config: GenerationConfig, prompts: list[PromptItem], arm: str = "base"
) -> tuple[float, str, str]:
    """(images/s, device, dtype) of the engine's batched path for `arm`, after one warm-up batch."""
    renderer = Renderer(config)
    first = prompts[: config.batch_size]
    renderer.render_batch(arm, [p.text for p in first], [p.negative_prompt for p in first], [0] * len(first))
    synchronize(renderer.device)
    started = time.perf_counter()
    count = sum(1 for _ in renderer.render_arm(arm, prompts))
    synchronize(renderer.device)
    return count / (time.perf_counter() - started), renderer.device, renderer.dtype


def weight_adapters(model: str, folder: Path) -> tuple[AdapterArm, ...]:
    """One small random adapter per weight method on the UNet's attention projections, in peft's layout."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoHaConfig, LoKrConfig, LoraConfig, OFTConfig, get_peft_model

    targets = ["to_q", "to_k", "to_v", "to_out.0"]
    configs = {
        "lora": LoraConfig(r=8, lora_alpha=8, target_modules=targets),
        "dora": LoraConfig(r=8, lora_alpha=8, target_modules=targets, use_dora=True),
        "loha": LoHaConfig(r=8, alpha=8, target_modules=targets),
        "lokr": LoKrConfig(r=8, alpha=8, target_modules=targets),
        "oft": OFTConfig(r=0, oft_block_size=32, target_modules=targets),
    }
    arms = []
    for method, peft_config in configs.items():
        torch.manual_seed(0)
        adapted = get_peft_model(UNet2DConditionModel.from_pretrained(model, subfolder="unet"), peft_config)
        with torch.no_grad():
            for parameter in adapted.parameters():
                if parameter.requires_grad:
                    parameter.add_(torch.randn_like(parameter) * 0.01)
        adapted.save_pretrained(folder / method)
        arms.append(AdapterArm.detect(method, str(folder / method)))
    return tuple(arms)


def adapter_costs(config: GenerationConfig, prompts: list[PromptItem], folder: Path) -> str:
    """Images/s of the base arm and the OFT arm (the outermost layer) alone and beside four other methods'
    adapters loaded on the same UNet, and the seconds loading all five takes."""
    from dataclasses import replace

    adapters = weight_adapters(config.model, folder)
    alone = replace(config, arms=("base", "oft"), adapters=adapters[-1:])
    shared = replace(config, arms=("base", *(a.name for a in adapters)), adapters=adapters)
    load_s = time_renderer(shared) - time_renderer(config)
    lines = [f"loading 5 adapters (lora, dora, loha, lokr, oft): {load_s:.2f} s beyond the base model"]
    for arm in ("base", "oft"):
        single = peftlab_images_per_second(alone if arm == "oft" else config, prompts, arm)[0]
        among = peftlab_images_per_second(shared, prompts, arm)[0]
        lines.append(f"{arm} arm: {single:.2f} images/s alone, {among:.2f} with all five loaded")
    return "\n".join(lines)


def time_renderer(config: GenerationConfig) -> float:
    """Seconds to load the base pipeline alone."""
    started = time.perf_counter()
    Renderer(config)
    return time.perf_counter() - started


def plain_images_per_second(
    config: GenerationConfig, prompts: list[PromptItem], device: str, dtype: str
) -> float:
    """Images/s of a plain diffusers loop of the model's pipeline class (StableDiffusionPipeline,
    StableDiffusionXLPipeline): one prompt per call, one generator per image."""
    import diffusers
    import torch

    family = detect_family(config.model)
    pipe = family.pipeline().from_pretrained(
        config.model, dtype=getattr(torch, dtype), **family.pipeline_kwargs()
    )
    pipe = pipe.to(device)
    class_name, extra = SCHEDULERS[config.scheduler]
    pipe.scheduler = getattr(diffusers, class_name).from_config(pipe.scheduler.config, **extra)
    pipe.set_progress_bar_config(disable=True)
    settings = {
        "num_inference_steps": config.steps,
        "guidance_scale": config.guidance,
        "width": config.width,
        "height": config.height,
    }
    pipe(prompts[0].text, negative_prompt=prompts[0].negative_prompt, **settings)  # warm-up
    synchronize(device)
    started = time.perf_counter()
    for prompt in prompts:
        generator = torch.Generator("cpu").manual_seed(0)
        pipe(prompt.text, negative_prompt=prompt.negative_prompt, generator=generator, **settings)
    synchronize(device)
    return len(prompts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="A diffusers SD-1.x or SDXL folder (default: a freshly built tiny model)."
    )
    parser.add_argument("--images", type=int, default=32, help="Images per side (default 32).")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--dtype", default="auto", help="peftlab's dtype (auto: float16 on CUDA).")
    parser.add_argument(
        "--baseline-dtype", default="float32", help="The plain loop's dtype (default float32)."
    )
    parser.add_argument(
        "--adapters",
        action="store_true",
        help="Also measure arms beside five loaded adapters of different methods (instead of one at a time).",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or str(build_tiny_model(Path(scratch) / "tiny", TinyModelConfig()).path)
        records = json.loads((REPO / "generation" / "builtin_prompts.json").read_text())["prompts"]
        prompts = [
            PromptItem(key=index, text=records[index % len(records)]["text"] + f", view {index}")
            for index in range(args.images)
        ]
        config = GenerationConfig(
            model=model,
            steps=args.steps,
            width=args.size,
            height=args.size,
            batch_size=args.batch_size,
            dtype=args.dtype,
        )
        ours, device, dtype = peftlab_images_per_second(config, prompts)
        plain = plain_images_per_second(config, prompts, device, args.baseline_dtype)
        costs = adapter_costs(config, prompts, Path(scratch)) if args.adapters else ""
    print(
        f"{args.images} images, {args.size}x{args.size}, {args.steps} steps, {config.scheduler}, on {device}\n"
        f"peftlab (batch {args.batch_size}, {dtype}): {ours:.2f} images/s\n"
        f"plain loop (batch 1, {args.baseline_dtype}): {plain:.2f} images/s\n"
        f"speed-up: {ours / plain:.2f}x" + (f"\n{costs}" if costs else "")
    )


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# The GPU benchmark in one go, for when a GPU is lent (8 minutes at most on one H200), one table:
#   SD-1.5-shaped random weights at 512x512, mixed precision auto (bf16 on an H200):
#   LoRA and TI at batch 1/4/8 without --compile, the diffusers-style reference loop and the model-only loop
#   (the bound) at batch 4, generation (30 steps, batch 8) against a plain pipeline loop in the same dtype;
#   then SDXL base 1.0-shaped random weights at 1024x1024 (make_tiny_model --shape sdxl, built offline):
#   LoRA at batch 1 and 4 without and with gradient checkpointing ("sdxl lora gc"), whose peak memory is the
#   figure to read, and SDXL generation (30 steps, batch 4) against a plain StableDiffusionXLPipeline loop;
#   then the SD-1.5 rows with --compile. Samples/s (images/s), peak memory, MFU.
# Rows print as they finish; on a GPU each row has a 120 s time box (--row-seconds) and the whole table a
# budget of PEFTLAB_BENCH_SECONDS (470) less 20 s (--budget-seconds): a row past its box prints
# "<row> <batch> skipped: ran past its 120 s time box ...", a row with under 20 s of the budget left prints
# "<row> <batch> skipped: N s left of the run's 450 s budget ...", a row out of GPU memory or failing says so,
# and the next rows go on; `timeout` stops the whole run at PEFTLAB_BENCH_SECONDS (the lease's 8 minutes).
# A dry run has no cap: it checks the code, however busy the CPU.
#   benchmarks/gpu.sh             # on the GPU
#   benchmarks/gpu.sh --dry-run   # the same code at tiny sizes on a CPU (the SDXL rows on the tiny SDXL model,
#                                 # 64 px), so the first GPU run has no typo
#   benchmarks/gpu.sh --parts sdxl   # the SDXL rows alone, with the whole budget (parts: sd15 sdxl compile)
# Extra arguments go to benchmarks/train.py (e.g. --peak-tflops 312 for an A100).
set -euo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || python=python3
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
mode=--gpu
for argument in "$@"; do
    [ "$argument" = --dry-run ] && mode=
done
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count(), *(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))'
[ -n "$mode" ] && nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
start=$SECONDS
if [ -n "$mode" ]; then
    seconds=${PEFTLAB_BENCH_SECONDS:-470}
    timeout --signal=INT "$seconds" "$python" benchmarks/train.py $mode --budget-seconds $((seconds - 20)) "$@"
else
    "$python" benchmarks/train.py "$@"
fi
echo "gpu.sh: $((SECONDS - start)) s"

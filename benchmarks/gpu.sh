#!/usr/bin/env bash
# The GPU benchmark in one go, for when a GPU is lent (about 8 minutes on one H200):
#   SD-1.5-shaped random weights at 512x512, mixed precision auto (bf16 on an H200):
#   LoRA and TI at batch 1/4/8 without and with --compile, the diffusers-style reference loop and the
#   model-only loop (the bound) at batch 4,
#   generation (30 steps, batch 8) against a plain pipeline loop in the same dtype; samples/s, images/s, peak memory, MFU.
# Rows print as they finish, the --compile ones last; on a GPU each row has a 120 s time box (--row-seconds):
# a row past it prints "<row> <batch> skipped: ran past its 120 s time box" and the next rows go on, and the
# whole run stops at 8 minutes (the lease's budget; PEFTLAB_BENCH_SECONDS changes it). A dry run has no cap:
# it checks the code, however busy the CPU.
#   benchmarks/gpu.sh             # on the GPU
#   benchmarks/gpu.sh --dry-run   # the same code at tiny sizes on a CPU, so the first GPU run has no typo
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
    timeout --signal=INT "${PEFTLAB_BENCH_SECONDS:-470}" "$python" benchmarks/train.py $mode "$@"
else
    "$python" benchmarks/train.py "$@"
fi
echo "gpu.sh: $((SECONDS - start)) s"

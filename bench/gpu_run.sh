#!/usr/bin/env bash
# Every GPU check of issue 17 in one command, for a lent H200 (docs/performance.md, "Running the
# GPU benchmarks"): the Qwen-Image variants, then the Wan VACE-14B step, each under its own time
# limit so one device call (at most 10 minutes) brings both tables back. Results go to
# $OUT (the device tool's folder) or bench/results/.
#
#   bash bench/gpu_run.sh                 # on the GPU machine, from the repository root
#   QWEN_S=60 VACE_S=60 DEVICE=cpu LAYERS=2 WIDTH=64 bash bench/gpu_run.sh   # a CPU rehearsal
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${OUT:-bench/results}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python="${PYTHON:-python3}"
if ! "$python" -c 'import diffsynth_qwen_image, diffsynth_vace' 2>/dev/null; then
    # the plugins are found through entry points: install core and plugins (no dependencies:
    # those are the machine's, or carried wheels already on PYTHONPATH) into a scratch folder
    site=/tmp/diffsynth-site
    "$python" -m pip install -q --no-deps --no-build-isolation --no-index --target "$site" \
        . plugins/diffsynth-qwen-image plugins/diffsynth-vace || exit 1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
device="${DEVICE:-cuda}"
extra=()
[ "$device" = cpu ] && extra=(--compile-backend aot_eager)
"$python" -c 'import torch, diffusers, peft; print("torch", torch.__version__, "diffusers", diffusers.__version__, "peft", peft.__version__, "cuda", torch.cuda.is_available())'
[ "$device" = cuda ] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout "${QWEN_S:-420}" "$python" bench/gpu_qwen_image.py --device "$device" "${extra[@]}" \
    --out "$out/gpu_qwen_image_table.md" ${QWEN_ONLY:+--only "$QWEN_ONLY"}
echo "qwen-image exit status $?"
timeout "${VACE_S:-150}" "$python" bench/gpu_wan_vace.py --device "$device" "${extra[@]}" \
    --out "$out/gpu_wan_vace_table.md" ${VACE_ONLY:+--only "$VACE_ONLY"}
echo "wan-vace exit status $?"

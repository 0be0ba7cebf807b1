#!/usr/bin/env bash
# The characterization benchmark on one CUDA GPU, in one go (about 5 minutes on an H200 / A100-class GPU,
# budgeted at 8): our worker (fast path) against the authors' loop as shipped, on the full-size SDXL
# architecture with random weights (sdxl-random: 1024², 25 steps, fp16), 2 SDXL-shaped random LoRAs,
# 2 prompts x 8 images each (the release's calls of 4 with seeds 42 and 46), plus a batch sweep.
#
# Writes $OUT/characterize-gpu.json (or artifacts/bench-gpu/ without $OUT), the text table and the README
# section (.txt, .md) and the whole log. Render the JSON here later with
#   python -m carlos bench characterize --from-json characterize-gpu.json --write-readme
#
# Packages: the device image has torch and transformers but neither diffusers nor open_clip (nor duckdb);
# wheels in $CARLOS_GPU_WHEELS (default data/cache/gpu-wheels, see bench/README.md for the download
# command) are installed into /tmp/carlos-site and put first on PYTHONPATH.
# Options (environment): CARLOS_GPU_COMPILE=1 adds --compile-unet (the first batch then compiles for a
# minute or two); CARLOS_GPU_LORAS, CARLOS_GPU_SEEDS change the size; CARLOS_GPU_TIMEOUT (s, default 480);
# CARLOS_GPU_BACKEND=tiny runs the same script on a CPU (a dry run of every step but the GPU's).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
BACKEND=${CARLOS_GPU_BACKEND:-sdxl-random}
WHEELS=${CARLOS_GPU_WHEELS:-data/cache/gpu-wheels}
DEST=${OUT:-artifacts/bench-gpu}
mkdir -p "$DEST"
LOG="$DEST/gpu-log.txt"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec > >(tee "$LOG") 2>&1

echo "== bench/gpu.sh $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname)"
if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; else echo "no nvidia-smi"; fi

if compgen -G "$WHEELS/*.whl" >/dev/null; then
  echo "== installing $(ls "$WHEELS"/*.whl | wc -l) wheels from $WHEELS"
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/carlos-site "$WHEELS"/*.whl
  export PYTHONPATH="/tmp/carlos-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
CARLOS_GPU_BACKEND=$BACKEND "$PY" - <<'EOF'
import importlib, os, sys
import torch
print("python", sys.version.split()[0], "| torch", torch.__version__, "| CUDA", torch.version.cuda, "| GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
missing = []
for name in ("diffusers", "transformers", "peft", "open_clip", "duckdb", "safetensors", "accelerate"):
    try:
        print(f"  {name} {getattr(importlib.import_module(name), '__version__', '?')}")
    except ImportError as e:
        missing.append(f"{name} ({e})")
if missing or not (torch.cuda.is_available() or os.environ["CARLOS_GPU_BACKEND"] == "tiny"):
    sys.exit(f"cannot run: missing {missing or 'nothing'}, CUDA available: {torch.cuda.is_available()}")
EOF

args=(bench characterize --backend "$BACKEND" --protocol smoke --seeds "${CARLOS_GPU_SEEDS:-8}" --loras "${CARLOS_GPU_LORAS:-2}"
      --ref-batch 4 --batch-sweep 4,8,16 --adaptive-images 448 --gpu off --quiet --json)
[ "${CARLOS_GPU_COMPILE:-0}" = 1 ] && args+=(--compile-unet)
echo "== python -m carlos ${args[*]}"
start=$(date +%s)
timeout "${CARLOS_GPU_TIMEOUT:-480}" "$PY" -m carlos "${args[@]}" >"$DEST/characterize-gpu.json"
echo "== measured in $(( $(date +%s) - start )) s"
"$PY" -m carlos bench characterize --from-json "$DEST/characterize-gpu.json" | tee "$DEST/characterize-gpu.txt"
"$PY" -m carlos bench characterize --from-json "$DEST/characterize-gpu.json" --markdown >"$DEST/characterize-gpu.md"
echo "== wrote $DEST/characterize-gpu.{json,txt,md} and $LOG"

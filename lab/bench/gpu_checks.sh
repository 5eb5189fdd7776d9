#!/usr/bin/env bash
# GPU checks for a lent machine (no internet, no package index), run from the repository root:
#
#     bash lab/bench/gpu_checks.sh        # writes its logs under $OUT (default /tmp/gpu_checks_out)
#
# 1. installs the wheels carried in .whl/ (pure-python packages the device image lacks: trl,
#    datasets, dill, multiprocess, math-verify and its parsers) into /tmp/site, no index, no deps;
# 2. prints the GPU (nvidia-smi -L) and the torch / transformers / peft / trl versions;
# 3. runs the GPU tests: python3 -m pytest -q -m gpu tests/test_gpu.py  -> $OUT/gpu_tests.log
# 4. the direct decoder against the model's forward on the GPU (lab.bench.decoder) -> $OUT/decoder.log
# 5. the math path (lab.bench.math_path): a random model with Qwen2.5-0.5B's architecture and
#    vocabulary size, SFT -> RL -> budget sweep on task.name=minimath (the MATH500 code path),
#    seconds, peak GPU memory and tokens/s per phase -> $OUT/math_path.log
# 6. if trl and datasets import, ours vs TRL's GRPOTrainer on the GPU (lab.bench.rl_step) with a random model
#    of Qwen2.5-0.5B's architecture and vocabulary, the lab's RL settings scaled (16 prompts x 8 samples,
#    512 tokens): python3 -m lab.bench.rl_step --device cuda --arch qwen2.5-0.5b --prompts 16 --k 8
#    --max-new-tokens 512 --steps 3, both sampling with transformers  -> $OUT/rl_step.log; then, if vllm
#    imports, the same with --sampler vllm (both with a colocated vLLM engine, and the seconds of one
#    weight copy into it)  -> $OUT/rl_step_vllm.log. Each leaves step 7 its time (SCALING_S).
# 7. torchrun and FSDP2 on the GPU (lab.bench.scaling --device cuda): RL samples/s of one process
#    against torchrun with one rank and model.fsdp=true (the overhead, target <= 5%)  -> $OUT/scaling.log
#
# Every step runs under `timeout` and the whole script ends within TOTAL_S seconds (default
# 560 s); a step that fails does not stop the later ones. $OUT/summary.txt
# lists each step's exit status and seconds (124/137: its time ran out).

set -u
set -o pipefail

OUT=${OUT:-/tmp/gpu_checks_out}
mkdir -p "$OUT"
TOTAL_S=${TOTAL_S:-560}
START=$(date +%s)
SITE=/tmp/site
SUMMARY=$OUT/summary.txt
[[ ${1:-} == --do ]] || : >"$SUMMARY"  # (not when it runs one of its own steps, below)

export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export HF_HOME=${HF_HOME:-/tmp/hf_home}

left() { echo $((TOTAL_S - ($(date +%s) - START))); }

# step NAME LIMIT_S CMD...: run CMD under timeout (LIMIT_S, or less if the total is nearly
# spent), output to the terminal and $OUT/NAME.log, status and seconds to the summary
step() {
  local name=$1 limit=$2 t0 rc budget
  shift 2
  budget=$(($(left) - 5))
  ((budget < limit)) && limit=$budget
  if ((limit < 10)); then
    echo "== $name: skipped, too little of the script's $TOTAL_S s is left" | tee "$OUT/$name.log"
    echo "$name rc=skipped(time) s=0" >>"$SUMMARY"
    return 0
  fi
  echo "== $name (timeout ${limit}s): $*"
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  rc=$?
  echo "== $name: rc=$rc in $(($(date +%s) - t0)) s"
  echo "$name rc=$rc s=$(($(date +%s) - t0))" >>"$SUMMARY"
  return 0
}

# upto LIMIT RESERVE: LIMIT, or less so that RESERVE seconds stay for the steps after this one
upto() {
  local l=$(($(left) - $2))
  echo $((l < $1 ? l : $1))
}

# ---------------------------------------------------------------- the steps that are shell functions
# (`timeout` runs programs, so `step` runs them as `bash THIS_SCRIPT --do FUNCTION`)
install_wheels() {
  shopt -s nullglob
  local wheels=(.whl/*.whl)
  if ((${#wheels[@]} == 0)); then
    echo "no wheels in .whl/: nothing to install"
    return 0
  fi
  mkdir -p "$SITE"
  if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE" "${wheels[@]}"; then
    echo "installed ${#wheels[@]} wheels into $SITE with pip"
  else  # no pip: these wheels are all pure python, so unpacking them is an install
    echo "pip failed; unpacking the wheels into $SITE instead"
    python3 - "$SITE" "${wheels[@]}" <<'EOF'
import sys, zipfile
for w in sys.argv[2:]:
    zipfile.ZipFile(w).extractall(sys.argv[1])
    print("unpacked", w)
EOF
  fi
  ls "$SITE"
}

versions() {
  nvidia-smi -L
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total --format=csv
  python3 - <<'EOF'
import importlib, platform, sys
print("python", sys.version.split()[0], platform.machine())
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported(),
          "capability", torch.cuda.get_device_capability(0))
else:
    print("WARNING: torch sees no CUDA device: the GPU tests will all SKIP")
for name in ("transformers", "tokenizers", "peft", "accelerate", "numpy", "pandas", "pyarrow", "fsspec",
             "huggingface_hub", "pytest", "trl", "datasets", "dill", "multiprocess", "math_verify"):
    try:
        m = importlib.import_module(name)
        print(f"{name} {getattr(m, '__version__', '?')} ({m.__file__})")
    except Exception as e:  # noqa: BLE001 - report and go on
        print(f"{name} NOT IMPORTABLE: {type(e).__name__}: {e}")
import core.rl.trainer, core.rl.loop, core.budget, core.sft  # noqa: E401,F401 - the modules the tests use import here
print("core imports ok")
EOF
}

if [[ ${1:-} == --do ]]; then
  "$2"
  exit $?
fi
SELF=$(readlink -f "${BASH_SOURCE[0]}")

# ---------------------------------------------------------------- 1. wheels
step install_wheels 60 bash "$SELF" --do install_wheels
export PYTHONPATH=$SITE:$PWD

# ---------------------------------------------------------------- 2. machine and versions
step versions 60 bash "$SELF" --do versions

# ---------------------------------------------------------------- 3. GPU tests
step gpu_tests 150 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -rfEs \
  --durations=10 --junitxml="$OUT/gpu_tests.xml"

# ---------------------------------------------------------------- 4. decoder against the model's forward, on the GPU
step decoder 90 python3 -m lab.bench.decoder --device cuda --dtype bf16 --repeats 3

# ---------------------------------------------------------------- 5. the math path at Qwen2.5-0.5B's size
step math_path 180 python3 -m lab.bench.math_path --device cuda --arch qwen2.5-0.5b --out "$OUT/math_path_runs"

# ---------------------------------------------------------------- 6. RL step benchmark on the GPU (ours vs TRL)
SCALING_S=150  # step 7's limit: the runs of step 6 leave it that much (plus step's 5 s margin)
RL_STEP=(python3 -m lab.bench.rl_step --device cuda --arch qwen2.5-0.5b --prompts 16 --k 8 --max-new-tokens 512
  --steps 3)
if python3 -c "import trl, datasets" >"$OUT/trl_import.log" 2>&1; then
  step rl_step "$(upto 180 $((SCALING_S + 5)))" "${RL_STEP[@]}"
  if python3 -c "import vllm" >"$OUT/vllm_import.log" 2>&1; then
    step rl_step_vllm "$(upto 240 $((SCALING_S + 5)))" "${RL_STEP[@]}" --sampler vllm
  else
    echo "== rl_step_vllm: skipped, vllm does not import (see $OUT/vllm_import.log)" | tee "$OUT/rl_step_vllm.log"
    tail -n 3 "$OUT/vllm_import.log"
    echo "rl_step_vllm rc=skipped(no vllm) s=0" >>"$SUMMARY"
  fi
else
  echo "== rl_step: skipped, trl/datasets do not import (see $OUT/trl_import.log)" | tee "$OUT/rl_step.log"
  cat "$OUT/trl_import.log"
  echo "rl_step rc=skipped(no trl) s=0" >>"$SUMMARY"
  echo "rl_step_vllm rc=skipped(no trl) s=0" >>"$SUMMARY"
fi

# ---------------------------------------------------------------- 7. torchrun + FSDP2 on the GPU
step scaling "$SCALING_S" python3 -m lab.bench.scaling --device cuda --steps 6

nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv >"$OUT/nvidia_smi_end.txt" 2>&1
echo "== summary (total $(($(date +%s) - START)) s, limit $TOTAL_S s)"
cat "$SUMMARY"

#!/usr/bin/env bash
# Everything a short GPU lease should check, in one command: the CUDA tests, the peak memory of a
# 1M-transition run, a kernel profile of the graphed step, the throughput benchmark on the GPU, a full
# Diffusion-QL run on the bandit on the GPU (the README's main job) and, optionally, every recipe's step
# (graphed, float32 and TF32) and a quality run. Logs go to $OUT (default ./gpu_out). STAGES picks stages
# (default: tests bench kernels bandit); QUALITY holds the quality run's arguments (benchmarks/d4rl_quality.py),
# its dataset read from MINARI_DATASETS_PATH.
#
# The GPU image carries torch but not gymnasium, minari or SB3: put their wheels (Python 3.12) in .whl/
# and they are installed into /tmp/site first; see docs/performance.md for the exact download command.
set -u
OUT=${OUT:-gpu_out}
STAGES=${STAGES:-tests bench kernels bandit}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    python3 -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, torch.cuda.get_device_name())'
} 2>&1 | tee "$OUT/gpu.txt"

has() { [[ " $STAGES " == *" $1 "* ]]; }

if has tests; then
    echo "== CUDA tests (finetune, select: online collection and FQE on the GPU, unverified until a session runs them)"
    timeout "${TEST_TIMEOUT:-240}" python3 -m pytest -q -p no:cacheprovider -x tests/test_cuda_graphs.py tests/test_reverse_chain.py tests/test_samplers.py \
        tests/test_finetune.py tests/test_select.py 2>&1 \
        | tee "$OUT/cuda_tests.log" | tail -15
fi
if has memory; then
    echo "== peak memory, 1M transitions"
    for seeds in 1 5; do
        timeout 120 python3 benchmarks/gpu_memory.py --device cuda --seeds "$seeds" 2>&1 | tail -3 | tee -a "$OUT/memory.txt"
    done
fi
if has profile; then
    echo "== kernel profile of the graphed exact step"
    for flags in "" "--tf32"; do
        timeout 120 python3 benchmarks/gpu_profile.py --rows 40 $flags 2>&1 | tee -a "$OUT/profile.txt" | head -24
    done
fi
if has bench; then
    echo "== benchmark"
    timeout "${BENCH_TIMEOUT:-360}" python3 - "$OUT" ${BENCH_ROWS:-} <<'PY' 2>"$OUT/bench.err"
import json, sys
from dqltoolkit.bench.throughput import format_table, run_benchmark, to_json_rows
rows = sys.argv[2].split(",") if len(sys.argv) > 2 else ["reference", "exact", "exact_x5", "approx", "eval", "reduced", "ensemble", "samplers"]
res = run_benchmark("cuda", repeats=5, rows=rows, progress=lambda m: print(m, file=sys.stderr))
text = format_table(res)
open(f"{sys.argv[1]}/bench.md", "w").write(text + "\n")
open(f"{sys.argv[1]}/bench.jsonl", "w").write("\n".join(json.dumps(r) for r in to_json_rows(res)) + "\n")
print(text)
PY
    tail -3 "$OUT/bench.err"
fi
if has kernels; then
    echo "== do the GPU's hand-written chain kernels earn their keep? (issue 28: with, without, torch.compile)"
    timeout "${KERNELS_TIMEOUT:-300}" python3 benchmarks/kernels_ab.py --device cuda --steps 300 --out "$OUT/kernels_ab.json" 2>&1 | tail -6
fi
if has bandit; then
    echo "== Diffusion-QL on bandit2d-v0, the README's main job, on the GPU"
    timeout "${BANDIT_TIMEOUT:-240}" python3 -m dqltoolkit.cli train --agent diffusion-ql --env bandit2d-v0 --device cuda \
        --out "$OUT/bandit" --no-progress 2>&1 | grep -v "^|" | tail -8
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: r[k] for k in ('steps', 'steps_per_s', 'backend', 'mean_return')}, r['evaluation'][0].get('mode_shares'))" "$OUT/bandit/results.json"
fi
if has recipes; then
    echo "== every recipe"
    timeout "${RECIPES_TIMEOUT:-300}" python3 -m dqltoolkit.cli bench --device cuda --rows reference,recipes,reduced --repeats 3 \
        2>"$OUT/recipes.err" | tee "$OUT/recipes.md"
    tail -3 "$OUT/recipes.err"
fi
if has quality; then
    echo "== quality: ${QUALITY:-}"
    timeout "${QUALITY_TIMEOUT:-400}" python3 benchmarks/d4rl_quality.py --device cuda --out "$OUT/quality" ${QUALITY:-} 2>&1 \
        | grep -v "it/s\]$" | tail -25
fi

#!/usr/bin/env bash
# One short GPU check of the kernel backends (about 3-5 minutes on one H100):
#   1. report the torch build and whether CUDA is usable;
#   2. install ddkit (editable) and only the dependencies that are missing;
#   3. run the CUDA tests (tests/test_kernels_cuda.py, tests/test_cuda.py);
#   4. run the benchmark suite on CUDA (kernels, peak memory, sampler overhead).
# Results go to "$OUT" if set, else to benchmarks/gpu-results/: pytest log, benchmark log and
# bench-cuda.json. Run from anywhere:  bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
OUT_DIR="${OUT:-benchmarks/gpu-results}"
mkdir -p "$OUT_DIR"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}" PYTHONUNBUFFERED=1
status=0

echo "== torch"
"$PY" -c "import torch; print(torch.__version__, torch.cuda.is_available())" 2>&1 | tee "$OUT_DIR/torch.txt" \
    || echo "torch is not installed"
if ! "$PY" -c "import torch" 2>/dev/null; then
    # no torch at all: take the CUDA build from the index or wheel cache pip is configured with
    "$PY" -m pip install -q torch || { echo "could not install torch"; exit 1; }
fi

echo "== install"
missing=$("$PY" - <<'EOF'
import importlib.util
need = {"pluggy": "pluggy>=1.3", "pydantic": "pydantic>=2.5", "omegaconf": "omegaconf>=2.3", "numba": "numba>=0.59",
        "numpy": "numpy>=1.24", "click": "click>=8.1", "pytest": "pytest>=7.4", "hypothesis": "hypothesis>=6.90"}
print(" ".join(spec for module, spec in need.items() if importlib.util.find_spec(module) is None))
EOF
)
if [ -n "$missing" ]; then
    echo "installing: $missing"
    # shellcheck disable=SC2086
    "$PY" -m pip install -q $missing || status=1
fi
# --no-deps: never let pip swap the preinstalled CUDA torch for another build
"$PY" -m pip install -q --no-deps --no-build-isolation -e . || "$PY" -m pip install -q --no-deps -e . || status=1
"$PY" -c "import ddkit, torch; print('ddkit', ddkit.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" \
    | tee -a "$OUT_DIR/torch.txt"

echo "== CUDA tests"
timeout 120 "$PY" -m pytest -q -rs tests/test_kernels_cuda.py tests/test_cuda.py 2>&1 | tee "$OUT_DIR/pytest-cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== benchmark on CUDA"
timeout 210 "$PY" benchmarks/run.py --device cuda --sections kernels,memory,sampler --budget 0.5 \
    --json "$OUT_DIR/bench-cuda.json" 2>&1 | tee "$OUT_DIR/bench-cuda.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo "== done (status $status); results in $OUT_DIR"
exit $status

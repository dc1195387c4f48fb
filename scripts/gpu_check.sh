#!/usr/bin/env bash
# normexp's whole GPU check in one command: about 8 minutes on one GPU, everything it measures in one folder.
#
#   scripts/gpu_check.sh [OUT] [--device cuda] [--wheels .whl] [--limit-s 480] [--only PHASES] [--tiny]
#   make gpu-check OUT=folder
#
# OUT defaults to $OUT (set by tools that run a command on a GPU box and bring a folder back). The phases, each
# with a time limit (one that fails or runs out is logged, the next still runs, and the exit status is 1):
#   tests  the GPU-marked tests, and the equality tests rerun on the device with deterministic kernels (fused vs
#          separate runs, a SIGKILLed run resumed bit-identical, channels_last, bf16): pytest -m "gpu or equality"
#   bench  scripts/bench.py --synthetic on ResNet-18 (the batch-size grid's paper model) at batch 128 and 512: the
#          runner against the bare loop, every fast-path switch alone and combined, FLOP/s against the bf16 peak
#   fused  scripts/bench.py --fused: 8 and 32 seeds at batch 1, BN and GN+WS, on the batch-size grid's ResNet-8 (CPU scale) and ResNet-18,
#          against as many serial runs
#   costs  scripts/paper_costs.py: a slice of every paper-scale experiment on generated files in the real formats,
#          projected to the GPU-hours of each claim's grid, with whatever time is left: cells left unsliced are
#          listed as such, and `--only costs --limit-s 300` on the same OUT slices those (completed ones are kept)
# Files in OUT (seven, one level deep): gpu-check.log, <device>.csv, <device>-fused-resnet8.csv,
# <device>-fused-resnet18.csv, <device>-paper-costs.csv and .md, summary.md (README's tables of all of them).
# Missing dependencies (a GPU box without network may lack Hydra, its launchers, submitit, wandb) are installed
# from the wheels that scripts/prepare_wheels.sh prepared, into a folder put on PYTHONPATH.
# --only tests,bench,fused,costs: those phases alone. --tiny: seconds-long settings of every phase (the CPU dry
# run that the test suite runs: --device cpu --tiny).
set -uo pipefail

usage() { sed -n '2,4p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
out=${OUT:-} device=cuda wheels=.whl limit_s=480 tiny=0 only=tests,bench,fused,costs
while [ $# -gt 0 ]; do
  case $1 in
    --device) device=${2:?}; shift 2 ;;
    --wheels) wheels=${2:?}; shift 2 ;;
    --limit-s) limit_s=${2:?}; shift 2 ;;
    --only) only=${2:?}; shift 2 ;;
    --tiny) tiny=1; shift ;;
    -h|--help) usage ;;
    -*) echo "gpu_check.sh: unknown option $1" >&2; usage ;;
    *) out=$1; shift ;;
  esac
done
if [ -z "$out" ]; then
  echo "gpu_check.sh: no output folder: pass one (scripts/gpu_check.sh results/gpu-check) or set OUT" >&2
  exit 2
fi
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mkdir -p "$out" && out=$(cd "$out" && pwd)
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
site=${TMPDIR:-/tmp}/normexp-gpu-check-site
export PYTHONPATH="$repo:$site${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
prefix=${device%%:*}
exec > >(tee -a "$out/gpu-check.log") 2>&1
tee_pid=$!

echo "== normexp GPU check, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

# --- dependencies: what is missing, from the prepared wheels ---
"$python" - "$wheels" "$site" <<'EOF' || exit 2
"""Install from the wheel folder every distribution not installed already (no index, no dependency resolution:
the folder holds the dependencies too); then check that normexp imports."""
import importlib.metadata, importlib.util, pathlib, re, subprocess, sys

wheels, site = pathlib.Path(sys.argv[1]), sys.argv[2]
needed = ["hydra", "omegaconf", "antlr4", "submitit", "wandb", "hydra_plugins.hydra_joblib_launcher"]


def present(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


if not all(map(present, needed)) and wheels.is_dir():
    def installed(wheel):
        try:
            importlib.metadata.version(re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]))
            return True
        except importlib.metadata.PackageNotFoundError:
            return False
    missing = [str(w) for w in sorted(wheels.glob("*.whl")) if not installed(w)]
    print(f"installing {len(missing)} wheels from {wheels} into {site}")
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--target", site]
    subprocess.run([*pip, *missing], check=True)
    sys.path.insert(0, site)
    importlib.invalidate_caches()
absent = [m for m in needed if not present(m)]
if absent:
    sys.exit(f"missing {', '.join(absent)} and no wheels for them in {wheels}: run scripts/prepare_wheels.sh "
             f"{wheels} on a machine with network and copy the folder here (with the repository)")
import torch, normexp  # noqa: E401
cuda = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}, {cuda}")
EOF

# --- settings: the real check, or seconds-long ones (--tiny) ---
if [ "$tiny" = 1 ]; then
  tests=(tests/test_fused.py -m equality -k "mlp_seeds and bn")
  bench=(--scale smoke --experiments batchsize --batches 4 8 --variants bf16,channels_last --steps 2 --warmup 1
         --repeats 1)
  fused=(--batches 1 --members 2 3 --steps 1 --warmup 1 --repeats 1)
  fused_resnet8=(--scale smoke) fused_resnet18=(--override "model.widths=[32,32,32,32]")
  costs=(--experiments santurkar2018-dln --warmup 1 --steps 8)
else
  # only the files that hold such tests: others may import what a GPU box lacks (nbformat, mlxtend)
  tests=($(grep -l -E "mark\.(gpu|equality)" tests/test_*.py) -m "gpu or equality")
  switches=bf16,channels_last,compile,cuda_graphs,bf16+channels_last,bf16+channels_last+cuda_graphs
  bench=(--scale paper --experiments batchsize --batches 128 512 --variants "$switches,bf16+channels_last+compile"
         --steps 50 --warmup 10 --repeats 1)  # one window each (CUDA events): compiling dominates the phase
  fused=(--batches 1 --members 8 32 --seconds 0.5 --repeats 1)
  fused_resnet8=(--scale cpu) fused_resnet18=()
  costs=(--warmup 10 --steps 200)
fi

failed=()
phase() {  # phase NAME SECONDS COMMAND...: run COMMAND under a time limit (if --only names it), log how it ended
  local name=$1 limit=$2 started=$SECONDS; shift 2
  [[ ",$only," == *",${name%% *},"* ]] || return 0
  echo "== $name (limit ${limit}s): $*"
  timeout -k 10 "$limit" "$@"
  local status=$?
  echo "== $name: exit $status after $((SECONDS - started))s"
  [ "$status" = 0 ] || failed+=("$name (exit $status$([ "$status" = 124 ] && echo ', time limit'))")
}
left() { echo $((limit_s - SECONDS - 20)); }  # seconds left, keeping 20 for the summary

phase tests 90 "$python" -m pytest -p no:cacheprovider --device "$device" "${tests[@]}"
phase bench 170 "$python" scripts/bench.py --device "$device" --synthetic "${bench[@]}" --out "$out/$prefix.csv"
fused_resnet18+=(--scale paper --override data.augment=false)  # ResNet-18's scale; fused runs do not augment
for model in resnet8 resnet18; do
  if [ "$model" = resnet8 ]; then model_args=("${fused_resnet8[@]}"); else model_args=("${fused_resnet18[@]}"); fi
  phase "fused $model" 60 "$python" scripts/bench.py --fused --device "$device" --synthetic --experiments batchsize \
    --norms bn gn+ws "${fused[@]}" "${model_args[@]}" --out "$out/$prefix-fused-$model.csv"
done
phase costs "$(( $(left) > 30 ? $(left) : 30 ))" "$python" scripts/paper_costs.py --device "$device" \
  "${costs[@]}" --budget-s "$(( $(left) - 45 > 10 ? $(left) - 45 : 10 ))" --out "$out/$prefix-paper-costs.csv"
"$python" scripts/update_readme.py --bench-of "$out" > "$out/summary.md" || failed+=("summary")

echo "== done in ${SECONDS}s; files in $out:"
ls "$out"
status=0
if [ ${#failed[@]} -gt 0 ]; then
  printf '== failed: %s\n' "${failed[@]}"
  status=1
fi
exec >&- 2>&-
wait "$tee_pid"  # the log is whole before the script ends
exit $status

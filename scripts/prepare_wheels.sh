#!/usr/bin/env bash
# Fill a folder with the wheels of normexp's dependencies that a GPU box without network may lack, for
# scripts/gpu_check.sh to install offline: hydra-core, omegaconf, antlr4-python3-runtime, the Hydra joblib and
# submitit launchers, submitit and wandb, with their dependencies (no torch, torchvision, pandas: the box has them).
#
#   scripts/prepare_wheels.sh [FOLDER]        # default .whl/ (git-ignored), on a machine with PyPI access
#
# The versions are those installed here (what the test suite ran with), else the newest. The wheels are for the
# GPU box's Python and platform: PY_VERSION (default 3.12) and PLATFORM (default x86_64 manylinux) set them.
# antlr4-python3-runtime 4.9.3, which Hydra 1.3 pins, exists only as source on PyPI: it is built here into a
# pure-Python wheel.
set -euo pipefail

folder=${1:-.whl}
python=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
py_version=${PY_VERSION:-3.12}
platform=${PLATFORM:-x86_64}
packages=(hydra-core omegaconf antlr4-python3-runtime hydra-joblib-launcher hydra-submitit-launcher submitit wandb)

pinned=()
for package in "${packages[@]}"; do
  version=$("$python" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$package" 2>/dev/null) \
    && pinned+=("$package==$version") || pinned+=("$package")
done
mkdir -p "$folder"
antlr=$(printf '%s\n' "${pinned[@]}" | grep '^antlr4-python3-runtime')
"$python" -m pip wheel --quiet --no-deps --wheel-dir "$folder" "$antlr"
platforms=()
for tag in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014; do platforms+=(--platform "${tag}_$platform"); done
"$python" -m pip download --quiet --dest "$folder" --find-links "$folder" --only-binary=:all: \
  --python-version "$py_version" --implementation cp "${platforms[@]}" "${pinned[@]}"
echo "$(ls "$folder"/*.whl | wc -l) wheels ($(du -sh "$folder" | cut -f1)) in $folder for Python $py_version on $platform:"
ls "$folder"

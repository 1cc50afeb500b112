#!/usr/bin/env bash
# On a CPU machine with PyPI and CUDA 13's nvcc (the project's dev machine has both): gsplat's CUDA extension
# built ahead for the GPU machine (Python 3.12, torch 2.11 + CUDA 13.0, sm_90: H100 and H200), put into .whl/ in
# place of the pure wheel that fetch_wheels.sh downloads. The device check then imports it instead of compiling
# (65-80 s of every check so far). Should it not load there (another torch build), gsplat falls back to its JIT.
#   bash benchmarks/gpu/fetch_wheels.sh && bash benchmarks/gpu/build_gsplat.sh [DEST]
# It installs torch 2.11 (CUDA 13.0, ~5 GB with its CUDA libraries) into a scratch venv under $WORK.
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=${1:-.whl}
work=${WORK:-/tmp/esd-gs-gsplat-build}
version=$(sed -n 's/^gsplat==//p' benchmarks/gpu/wheels.txt)
torch_version=2.11.0  # the GPU machine's
py312=${PYTHON312:-$(command -v python3.12 || true)}
[ -n "$py312" ] || { echo "build_gsplat: needs Python 3.12 (set PYTHON312)" >&2; exit 1; }
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
"$CUDA_HOME/bin/nvcc" --version | grep -q "release 13\." || { echo "build_gsplat: needs CUDA 13's nvcc in $CUDA_HOME" >&2; exit 1; }
mkdir -p "$work" "$dest"
[ -x "$work/venv/bin/python" ] || "$py312" -m venv "$work/venv"
pip=("$work/venv/bin/python" -m pip)
"${pip[@]}" install -q "torch==$torch_version" numpy ninja wheel setuptools jaxtyping rich
"$work/venv/bin/python" -c "import torch; assert torch.version.cuda.startswith('13.'), torch.version.cuda"
"${pip[@]}" download -q --no-deps --no-binary :all: --no-build-isolation "gsplat==$version" -d "$work"
rm -rf "$work/src" "$work/out" && mkdir "$work/src" && tar xzf "$work/gsplat-$version.tar.gz" -C "$work/src"
(cd "$work/src/gsplat-$version" && TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
  "${pip[@]}" wheel -q . --no-deps --no-build-isolation -w "$work/out")
# gsplat must take the built extension with that torch, not its JIT (no GPU is needed to load it)
"${pip[@]}" install -q --no-deps --force-reinstall "$work"/out/gsplat-*.whl
(cd "$work" && "$work/venv/bin/python" -c "import gsplat.cuda._backend as b; assert b._C.__name__ == 'gsplat.csrc', b._C")
rm -f "$dest"/gsplat-*.whl
cp "$work"/out/gsplat-*.whl "$dest"/
ls -1 "$dest"

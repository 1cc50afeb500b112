#!/usr/bin/env bash
# On a CPU machine with PyPI: download the wheels listed in wheels.txt for the GPU machine's Python 3.12
# into .whl/ (git-ignored), which the device run carries.   bash benchmarks/gpu/fetch_wheels.sh [DEST]
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=${1:-.whl}
mkdir -p "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dest" -r benchmarks/gpu/wheels.txt
ls -1 "$dest"

#!/usr/bin/env bash
# Fetch, on a machine with PyPI access, the wheels that the GPU machine's image lacks for
# benchmarks/gpu_check.sh, into .whl/ (git-ignored); carry .whl with the GPU call. That image has Python
# 3.12, torch, Lightning, transformers, torchmetrics, einops, scipy, matplotlib, pyyaml, pillow, psutil,
# ninja, msgpack, py-cpuinfo and nvidia-ml-py, but not DeepSpeed (and its hjson, pydantic), webdataset,
# braceexpand or OmegaConf. Versions are the ones the CPU suite runs with. About 5 MB.
#
#   benchmarks/gpu_wheels.sh        # then: run the GPU check with .whl carried along
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-$(command -v python3 || command -v python)}"
mkdir -p .whl
"$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2 hjson==3.1.0 \
  webdataset==1.0.2 braceexpand==0.1.7 omegaconf==2.4.0 antlr4-python3-runtime==4.13.2
# DeepSpeed ships an sdist only; without its C++/CUDA ops (they are JIT-built on use, and ZeRO-2 with
# torch's AdamW uses none) it builds into a pure-Python wheel. Building it imports torch.
DS_BUILD_OPS=0 "$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w .whl deepspeed==0.16.9
ls -la .whl

#!/usr/bin/env bash
# Sets up the official RAVE (acids-rave==2.3.1, CC BY-NC) in its own venv, .cache/rave-venv,
# for speed comparisons only (benchmarks/bench_rave_baseline.py, benchmarks/compare_rave.py).
# RAVE is installed with --no-deps, then only what importing `rave` and running its
# scripts/export.py on a v2 model needs (not tensorboard, pytest, ...): its own pins
# scipy==1.10.0 (needs numpy<2) and pytorch-lightning==1.9.0 (needs setuptools<81 for
# pkg_resources), with this project's torch 2.14.1 / torchaudio 2.11.0.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/rave-venv
TORCH="torch==2.14.1 torchaudio==2.11.0"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
PIP="$VENV/bin/pip"
$PIP install $TORCH
$PIP install --no-deps acids-rave==2.3.1
$PIP install $TORCH "setuptools<81" "numpy<2" scipy==1.10.0 pytorch-lightning==1.9.0 \
    gin-config cached-conv==2.5.0 einops librosa scikit-learn GPUtil lmdb udls nn-tilde absl-py tqdm pyyaml
"$VENV/bin/python" -W ignore -c "import rave, nn_tilde; print('rave', rave.__file__)"

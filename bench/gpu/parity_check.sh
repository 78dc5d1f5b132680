#!/bin/bash
# The exported models (scripts/export_models.py with the device's PyTorch) against PyTorch with
# compute on cuda:0, and the small BERT's 10,000-call device-memory check. Packed like
# run_suite.sh (model_parity_cuda_test and compiler_cuda_bert_test in the tarball).
set -u
PKG=${1:-carry/dev/nimble.tar.xz}
tar xJf "$PKG" -C /tmp && export LD_LIBRARY_PATH=/tmp/nimble/lib:/usr/local/cuda/lib64
N=/tmp/nimble
timeout ${EXPORT_TIMEOUT:-110} python3 scripts/export_models.py /tmp/models >/tmp/export.log 2>&1
echo "export rc=$?"; tail -4 /tmp/export.log
NIMBLE_MODELS_DIR=/tmp/models timeout 100 $N/model_parity_cuda_test 2>&1 | grep -E "on cuda|memory plan|OK|FAILED|Failure|error" | head -20
NIMBLE_BERT_ONNX=$N/bert_small.onnx timeout 60 $N/compiler_cuda_bert_test \
  --gtest_filter='*MatchesTheCpu*' 2>&1 | grep -E "mixed calls|OK \]|FAILED|Failure"

#!/usr/bin/env bash
# Installs the Debian packages Nimble builds and tests with. Idempotent: asks dpkg what is
# already installed and runs apt-get only for what is missing (no network when nothing is).
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config g++ clang clang-format
  # serving stack
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libspdlog-dev libfmt-dev prometheus-cpp-dev
  # compute
  libtbb-dev libdnnl-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev curl
  # executable-cache digests (SHA-256)
  libssl-dev
  # linting of deployment files
  yamllint python3-yaml
  # PyTorch + ONNX (Debian's): export of the test models and the CPU baseline
  python3-torch python3-onnx python3-numpy libopenblas0-pthread
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"

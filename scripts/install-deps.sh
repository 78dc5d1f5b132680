#!/usr/bin/env bash
# Installs the Debian packages Nimble builds and tests with. Idempotent: asks dpkg what is
# already installed and runs apt-get only for what is missing (no network when nothing is).
#
#   install-deps.sh              everything: build, tests, benchmarks, lint, examples
#   install-deps.sh --build-only what `cmake` + `ninja nimble-server` need (docker/Dockerfile*)
set -euo pipefail

build_packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config g++
  # serving stack
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libspdlog-dev libfmt-dev prometheus-cpp-dev
  # compute
  libtbb-dev libdnnl-dev
  # found at configure time even when only nimble-server is built
  libgtest-dev libgmock-dev libbenchmark-dev
  # executable-cache digests (SHA-256)
  libssl-dev
)

dev_packages=(
  clang clang-format curl
  # linting of deployment files (scripts/lint-deploy.sh). `prometheus` is there for promtool;
  # on a host booted with systemd the package also enables and starts a Prometheus daemon on
  # :9090 (`systemctl disable --now prometheus` if unwanted). Containers refuse the start.
  yamllint python3-yaml prometheus
  # examples/python_client.py (stubs generated at run time with protoc + grpc_python_plugin)
  python3-grpcio python3-protobuf
  # PyTorch + ONNX (Debian's): export of the test models and the CPU baseline
  python3-torch python3-onnx python3-numpy libopenblas0-pthread
  # `make bench`'s figures (bench/report.py)
  python3-matplotlib
)

packages=("${build_packages[@]}")
case "${1:-}" in
  --build-only) ;;
  "") packages+=("${dev_packages[@]}") ;;
  *) echo "usage: $0 [--build-only]" >&2; exit 2 ;;
esac

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

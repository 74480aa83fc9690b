#!/usr/bin/env bash
# gt set-up on Debian bookworm: installs the Debian packages gt needs (once),
# builds, and runs the main job or the tests.
#
#   tools/setup.sh run     install, build, run the main job (Fashion-MNIST training)
#   tools/setup.sh test    install, build, run every test through ctest
#   tools/setup.sh deps    install the packages only
#   tools/setup.sh build   install and build only
#
# GT_BUILD_DIR (default: build/) and GT_JOBS (default: nproc) adjust the build.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${GT_BUILD_DIR:-$root/build}
jobs=${GT_JOBS:-$(nproc)}

packages=(
  build-essential cmake ninja-build ccache pkg-config
  libtorch-dev libopenblas0-pthread
  libzmq3-dev cppzmq-dev libyaml-cpp-dev libspdlog-dev catch2 libgloo-dev
  libcli11-dev flatbuffers-compiler libflatbuffers-dev zlib1g-dev libcairo2-dev
  dataset-fashion-mnist
)
# Only the tests need these: gt viz's HTML timeline is opened in headless
# Chromium and screenshotted (tests/unit/tools/viz_test.cpp, "[chromium]").
test_packages=(chromium)

install_deps() {
  local missing=()
  for p in "${packages[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "gt: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

build() {
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache "$@"
  cmake --build "$build" -j "$jobs"
}

case "${1:-run}" in
  deps) install_deps ;;
  build) install_deps; build ;;
  run)
    install_deps
    build -DGT_BUILD_TESTS=OFF
    "$build/bin/gt_train_fashion_mnist" "${@:2}"
    ;;
  test)
    install_deps "${test_packages[@]}"
    build -DGT_BUILD_TESTS=ON
    cd "$build"
    ctest --output-on-failure -j "$jobs" -E '\[gpu\]'
    ;;
  *) echo "usage: tools/setup.sh run|test|deps|build" >&2; exit 2 ;;
esac

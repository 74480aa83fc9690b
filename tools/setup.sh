#!/usr/bin/env bash
# gt set-up on Debian bookworm: installs the Debian packages gt needs (once),
# builds, and runs the main job or the tests.
#
#   tools/setup.sh run     install, build, run the main job (Fashion-MNIST training)
#   tools/setup.sh test    install, build, run every test through ctest, then
#                          each fuzzer for a bounded time (docs/fuzzing.md), then
#                          the integration tests under sanitizers (docs/sanitizers.md)
#   tools/setup.sh sanitize  the sanitizer part of `test` alone
#   tools/setup.sh deps    install the packages only
#   tools/setup.sh build   install and build only
#
# GT_BUILD_DIR (default: build/) and GT_JOBS (default: nproc) adjust the build.
# GT_FUZZ_SECONDS (default: 30) is each fuzzer's run in `test`, 0 for none;
# GT_FUZZ_BUILD_DIR (default: build-fuzz/) holds their instrumented build, and
# GT_FUZZ_BUILD_DIR-gcc the executor's (built with GCC while clang cannot).
# GT_SANITIZE (default: "address,undefined thread") lists the sanitizer builds
# `test` makes and runs, "" for none; they live in build-asan/ and build-tsan/.
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
# And the fuzzers: clang, and libFuzzer (with clang's sanitizer runtimes) for
# Debian's default clang version.
test_packages+=(clang libclang-rt-dev)

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

# Whether clang++ can link a libFuzzer target here.
have_libfuzzer() {
  command -v clang++ >/dev/null 2>&1 || return 1
  local tmp
  tmp=$(mktemp -d)
  printf 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }\n' \
    >"$tmp/probe.cpp"
  local ok=0
  clang++ -fsanitize=fuzzer "$tmp/probe.cpp" -o "$tmp/probe" >/dev/null 2>&1 || ok=1
  rm -rf "$tmp"
  return $ok
}

# build_fuzzers DIR CC CXX FLAGS TARGET: a GT_FUZZ build of TARGET in DIR.
build_fuzzers() {
  cmake -S "$root" -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_C_COMPILER="$2" -DCMAKE_CXX_COMPILER="$3" -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$4" \
    -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DGT_FUZZ=ON -DGT_BUILD_TOOLS=OFF >/dev/null
  cmake --build "$1" -j "$jobs" --target "$5"
}

# Builds the fuzzers alone (instrumented, in their own build dir) and runs
# each for GT_FUZZ_SECONDS from the committed corpus, GT_JOBS at a time. New
# inputs they find stay in the build dir; a crash fails the run and leaves
# its input under fuzz-artifacts/ (docs/fuzzing.md says how to replay it).
# clang builds every fuzzer it can; where it cannot build the executor's
# (Debian's LibTorch headers), GCC builds that one in "$dir-gcc" with clang's
# libFuzzer runtime (Note [gcc fuzz build] in cmake/gt_helpers.cmake).
fuzz() {
  local seconds=${GT_FUZZ_SECONDS:-30}
  local dir=${GT_FUZZ_BUILD_DIR:-$root/build-fuzz}
  [ "$seconds" -gt 0 ] || return 0
  if ! have_libfuzzer; then
    echo "gt: clang with libFuzzer not found: fuzzers skipped (ctest replayed their corpus)"
    return 0
  fi
  local start=$SECONDS
  build_fuzzers "$dir" clang clang++ "-O1 -gline-tables-only" gt_fuzzers
  local fuzzers=("$dir"/bin/gt_fuzz_*)
  if [ ! -x "$dir/bin/gt_fuzz_executor" ]; then
    build_fuzzers "$dir-gcc" gcc g++ "-O1 -g1" gt_fuzz_executor
    fuzzers+=("$dir-gcc/bin/gt_fuzz_executor")
  fi
  echo "gt: fuzzers built in $((SECONDS - start)) s; running each for $seconds s"
  mkdir -p "$dir/fuzz-artifacts" "$dir/fuzz-logs"
  local fuzzer name pids=() names=() failed=0
  for fuzzer in "${fuzzers[@]}"; do
    name=${fuzzer##*/gt_fuzz_}
    mkdir -p "$dir/fuzz-corpus/$name"
    # The first corpus dir takes what the fuzzer finds; the committed one is
    # only read.
    "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="$dir/fuzz-artifacts/$name-" \
      "$dir/fuzz-corpus/$name" "$root/tests/fuzz/corpus/$name" >"$dir/fuzz-logs/$name.log" 2>&1 &
    pids+=($!)
    names+=("$name")
    if [ ${#pids[@]} -ge "$jobs" ]; then
      wait "${pids[0]}" || { failed=1; tail -n 40 "$dir/fuzz-logs/${names[0]}.log"; }
      pids=("${pids[@]:1}")
      names=("${names[@]:1}")
    fi
  done
  local i
  for i in "${!pids[@]}"; do
    wait "${pids[$i]}" || { failed=1; tail -n 40 "$dir/fuzz-logs/${names[$i]}.log"; }
  done
  echo "gt: fuzzing took $((SECONDS - start)) s in all"
  if [ $failed -ne 0 ]; then
    echo "gt: a fuzzer failed; its input is in $dir/fuzz-artifacts/ (docs/fuzzing.md)" >&2
    return 1
  fi
}

# The ctest labels (test binaries) each sanitizer build runs. All of the
# integration tests run under each; ThreadSanitizer also gets the unit tests
# of the parts with threads of their own: the client's I/O thread and batch
# queue, the worker's I/O and executor threads, collectives and JIT service.
sanitized_tests() {
  case "$1" in
    thread) echo "gt_integration_tests gt_client_tests gt_worker_tests" ;;
    *) echo "gt_integration_tests" ;;
  esac
}

# Builds gt and the tests with each sanitizer set of GT_SANITIZE in a build
# dir of its own and runs them there. Every process the tests start (the
# dispatcher, workers, client programs) is the sanitized build too, and
# writes any report to a file: the run fails if a report was written, even
# by a process whose exit no test looked at.
sanitize() {
  local sets=${GT_SANITIZE-address,undefined thread}
  local san failed=0
  for san in $sets; do
    local dir=$root/build-asan
    [ "$san" = thread ] && dir=$root/build-tsan
    local start=$SECONDS
    local labels
    labels=$(sanitized_tests "$san")
    cmake -S "$root" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DGT_SANITIZER="$san" \
      -DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DGT_BUILD_TESTS=ON >/dev/null
    # shellcheck disable=SC2086
    cmake --build "$dir" -j "$jobs" --target $labels
    echo "gt: built with -fsanitize=$san in $((SECONDS - start)) s"
    local reports=$dir/sanitizer-reports
    rm -rf "$reports"
    mkdir -p "$reports"
    local supp=$root/tools/sanitizers
    local common="log_path=$reports/report:log_exe_name=1:print_stacktrace=1"
    export GT_SANITIZER_REPORTS=$reports
    # Sanitized processes run 2-15x slower and share the cores with the
    # other tests: a longer default liveness timeout keeps a slow turn from
    # reading as a dead peer. Tests about timeouts set their own.
    export GT_HEARTBEAT_TIMEOUT_MS=${GT_HEARTBEAT_TIMEOUT_MS:-15000}
    local regex
    regex="^($(echo "$labels" | tr ' ' '|'))\$"
    (
      cd "$dir"
      ASAN_OPTIONS="$common:detect_leaks=1:abort_on_error=0" \
        LSAN_OPTIONS="suppressions=$supp/lsan.supp" \
        UBSAN_OPTIONS="$common:halt_on_error=1" \
        TSAN_OPTIONS="$common:suppressions=$supp/tsan.supp:history_size=4" \
        ctest --output-on-failure -j "$jobs" -L "$regex" -E '\[gpu\]'
    ) || failed=1
    if compgen -G "$reports/report*" >/dev/null; then
      echo "gt: -fsanitize=$san reported (files in $reports):" >&2
      local f
      for f in "$reports"/report*; do
        echo "== $f" >&2
        head -n 60 "$f" >&2
      done
      failed=1
    fi
    echo "gt: -fsanitize=$san build and tests took $((SECONDS - start)) s"
  done
  return $failed
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
    fuzz
    sanitize
    ;;
  sanitize) install_deps; sanitize ;;
  *) echo "usage: tools/setup.sh run|test|sanitize|deps|build" >&2; exit 2 ;;
esac

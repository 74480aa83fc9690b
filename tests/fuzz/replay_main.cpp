// The plain driver of a fuzz target, for compilers without libFuzzer
// (docs/fuzzing.md).
//
//   gt_fuzz_NAME FILE_OR_DIR...
//     runs LLVMFuzzerTestOneInput once on every file (a directory: every
//     regular file in it, in name order), so ctest replays the corpus as a
//     regression test. A crash or an abort fails it like it fails a fuzzer.
//   gt_fuzz_NAME --mutate SECONDS [--seed N] [--crash-file PATH] FILE_OR_DIR...
//     runs random mutations of those inputs for SECONDS. Blind (no coverage
//     feedback), so no substitute for libFuzzer; it is how the executor is
//     fuzzed where clang cannot build it (Note [executor fuzzing] in
//     tests/fuzz/CMakeLists.txt). On a crash the input that caused it is
//     written to the crash file (default: ./mutate-crash) first.

#include <fcntl.h>
#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

std::vector<uint8_t> read_bytes(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// What the crash handler saves: the input being run (set before each run).
const uint8_t* g_current = nullptr;
size_t g_current_size = 0;
const char* g_crash_file = "mutate-crash";

extern "C" void save_and_reraise(int sig) {
  // Only async-signal-safe calls here.
  const int fd = ::open(g_crash_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    size_t done = 0;
    while (done < g_current_size) {
      const ssize_t n = ::write(fd, g_current + done, g_current_size - done);
      if (n <= 0) break;
      done += static_cast<size_t>(n);
    }
    ::close(fd);
  }
  const char msg[] = "gt fuzz driver: crashed; the input is in the crash file\n";
  (void)!::write(2, msg, sizeof msg - 1);
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

// A few random edits of the kinds libFuzzer makes, bounded in length.
void mutate(std::vector<uint8_t>& b, const std::vector<std::vector<uint8_t>>& all,
            std::mt19937_64& rng) {
  constexpr size_t kMaxLen = 4096;
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits; ++e) {
    const size_t pos = b.empty() ? 0 : rng() % b.size();
    switch (rng() % 6) {
      case 0:
        if (!b.empty()) b[pos] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 1:
        if (!b.empty()) b[pos] = static_cast<uint8_t>(rng());
        break;
      case 2:
        if (b.size() < kMaxLen)
          b.insert(b.begin() + static_cast<ptrdiff_t>(pos), static_cast<uint8_t>(rng()));
        break;
      case 3:
        if (!b.empty()) b.erase(b.begin() + static_cast<ptrdiff_t>(pos));
        break;
      case 4: {  // small values and boundaries matter most in these formats
        static constexpr uint8_t kInteresting[] = {0, 1, 2, 3, 0x7F, 0x80, 0xF0, 0xF1, 0xFF};
        if (!b.empty()) b[pos] = kInteresting[rng() % std::size(kInteresting)];
        break;
      }
      default: {  // splice a chunk of another input in
        const auto& other = all[rng() % all.size()];
        if (other.empty()) break;
        const size_t from = rng() % other.size();
        const size_t len = std::min<size_t>(1 + rng() % 64, other.size() - from);
        if (b.size() + len > kMaxLen) break;
        b.insert(b.begin() + static_cast<ptrdiff_t>(pos),
                 other.begin() + static_cast<ptrdiff_t>(from),
                 other.begin() + static_cast<ptrdiff_t>(from + len));
      }
    }
  }
}

int usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s FILE_OR_DIR...\n"
               "       %s --mutate SECONDS [--seed N] [--crash-file PATH] FILE_OR_DIR...\n",
               argv0, argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  double mutate_seconds = -1;
  uint64_t seed = 1;
  std::vector<std::string> paths;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--mutate" || a == "--seed" || a == "--crash-file") && i + 1 >= argc)
      return usage(argv[0]);
    if (a == "--mutate") {
      mutate_seconds = std::atof(argv[++i]);
    } else if (a == "--seed") {
      seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--crash-file") {
      g_crash_file = argv[++i];
    } else {
      paths.push_back(a);
    }
  }
  if (paths.empty()) return usage(argv[0]);

  std::vector<std::filesystem::path> files;
  for (const auto& p : paths) {
    std::error_code ec;
    if (std::filesystem::is_directory(p, ec)) {
      std::vector<std::filesystem::path> in_dir;
      for (const auto& e : std::filesystem::directory_iterator(p)) {
        if (e.is_regular_file()) in_dir.push_back(e.path());
      }
      std::sort(in_dir.begin(), in_dir.end());
      files.insert(files.end(), in_dir.begin(), in_dir.end());
    } else if (std::filesystem::is_regular_file(p, ec)) {
      files.emplace_back(p);
    } else {
      std::fprintf(stderr, "%s: no such file or directory: %s\n", argv[0], p.c_str());
      return 2;
    }
  }
  if (files.empty()) {
    std::fprintf(stderr, "%s: no inputs found\n", argv[0]);
    return 1;
  }

  if (mutate_seconds < 0) {
    for (const auto& f : files) {
      // Named before it runs, so the log shows which input crashed.
      std::fprintf(stderr, "running %s\n", f.c_str());
      const std::vector<uint8_t> bytes = read_bytes(f);
      LLVMFuzzerTestOneInput(bytes.data(), bytes.size());
    }
    std::fprintf(stderr, "%zu inputs ran\n", files.size());
    return 0;
  }

  std::vector<std::vector<uint8_t>> corpus;
  for (const auto& f : files) corpus.push_back(read_bytes(f));
  for (int sig : {SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL}) std::signal(sig, save_and_reraise);
  std::mt19937_64 rng(seed);
  const auto end = std::chrono::steady_clock::now() +
                   std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                       std::chrono::duration<double>(mutate_seconds));
  uint64_t runs = 0;
  std::vector<uint8_t> input;
  while (std::chrono::steady_clock::now() < end) {
    input = corpus[rng() % corpus.size()];
    mutate(input, corpus, rng);
    g_current = input.data();
    g_current_size = input.size();
    LLVMFuzzerTestOneInput(input.data(), input.size());
    ++runs;
  }
  std::fprintf(stderr, "%llu mutated inputs ran in %.0f s (seed %llu)\n",
               static_cast<unsigned long long>(runs), mutate_seconds,
               static_cast<unsigned long long>(seed));
  return 0;
}

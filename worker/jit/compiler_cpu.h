#pragma once
// CPU backend, building: compiles generated C++ with the system compiler into
// a shared object in an on-disk cache and loads it with dlopen.
//
// Note [compile cache]
// An entry is <dir>/<key>.so (plus <key>.cpp, the source, for people). The key
// hashes the stamp: the compiler's identity (its `--version` first line and
// resolved path), the flags, the target (machine and the CPU's feature flags,
// since -march=native code must not run on another CPU sharing the cache), and
// the source. The stamp itself is compiled into the object as `gt_jit_stamp`
// and compared after loading, so a hash collision or a foreign file is a miss,
// never wrong code. Writers compile in a private temporary directory inside
// the cache dir and rename() the result into place: concurrent workers (or
// threads) compiling the same source each produce a complete file and the last
// rename wins; readers see the old or the new file, never a partial one.
// Nothing is ever modified in place, so a loaded object stays valid.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <gt/error.h>

namespace gt::worker::jit {

/// Compiling or loading generated code failed; the message names the compiler,
/// the file and the compiler's first lines of output. Callers fall back to
/// eager execution.
class CompileError : public gt::Error {
 public:
  using gt::Error::Error;
};

/// GT_COMPILE_CACHE_DIR, else $XDG_CACHE_HOME/gt/jit, else $HOME/.cache/gt/jit,
/// else <temp dir>/gt-jit-<uid>. Reads the environment on every call.
std::filesystem::path default_cache_dir();

/// $CXX when set, else "c++". Reads the environment on every call.
std::string default_compiler();

/// -O3 -march=native -fPIC -shared -std=c++17 -fno-math-errno -fopenmp-simd.
/// No -ffast-math: results stay within a few ulp of LibTorch.
std::vector<std::string> default_cpu_flags();

/// A loaded shared object; dlclose when the last owner lets go. Compiled units
/// keep a shared_ptr to it for as long as they may call into it.
class LoadedLibrary {
 public:
  LoadedLibrary(void* handle, std::filesystem::path path);
  ~LoadedLibrary();
  LoadedLibrary(const LoadedLibrary&) = delete;
  LoadedLibrary& operator=(const LoadedLibrary&) = delete;

  /// Address of `name`; throws CompileError when the object lacks it.
  void* symbol(const std::string& name) const;
  const std::filesystem::path& path() const { return path_; }

 private:
  void* handle_;
  std::filesystem::path path_;
};

struct CpuCompilerConfig {
  std::string compiler = "c++";  // a program, or a program and arguments ("ccache c++")
  std::vector<std::string> flags = default_cpu_flags();
  std::filesystem::path cache_dir;  // empty: default_cache_dir()
  std::chrono::seconds timeout{120};  // a compiler running longer is killed
};

/// The outcome of one compile() call.
struct CompileResult {
  std::shared_ptr<LoadedLibrary> library;
  bool cache_hit = false;  // true: no compiler ran (disk or memory hit)
  std::chrono::nanoseconds elapsed{0};
  std::string key;
  std::filesystem::path path;
};

/// Counters of one CpuCompiler.
struct CompileStats {
  int64_t compiles = 0;     // compiler runs that succeeded
  int64_t disk_hits = 0;    // loaded from the cache dir
  int64_t memory_hits = 0;  // already loaded by this compiler
  int64_t failures = 0;     // compile() calls that threw
};

/// Builds sources into the cache dir and loads them (Note [compile cache]).
/// Thread-safe: compile() may run on several threads at once. Pinned (neither
/// copied nor moved). The compiler's identity and the target are computed on
/// first use.
class CpuCompiler {
 public:
  explicit CpuCompiler(CpuCompilerConfig config = {});
  CpuCompiler(const CpuCompiler&) = delete;
  CpuCompiler& operator=(const CpuCompiler&) = delete;

  /// Compiles `source` (or finds it in the cache) and loads it. Throws
  /// CompileError: compiler not runnable, compile error (with its output),
  /// timeout, load failure, unwritable cache dir.
  CompileResult compile(const std::string& source);

  /// The cache key of `source` under this configuration (32 hex digits).
  std::string cache_key(const std::string& source);

  CompileStats stats() const;
  const CpuCompilerConfig& config() const { return config_; }
  const std::filesystem::path& cache_dir() const { return dir_; }

 private:
  // The compiler, flags and target part of every stamp; computed on first
  // success (a failure is retried by the next call).
  std::string stamp_prefix();
  std::string stamp(const std::string& source);
  void count_failure();

  const CpuCompilerConfig config_;
  const std::filesystem::path dir_;
  std::mutex identity_mutex_;
  std::string stamp_prefix_;      // guarded by identity_mutex_; empty until known
  mutable std::mutex mutex_;      // guards stats_ and loaded_
  CompileStats stats_;
  std::unordered_map<std::string, std::weak_ptr<LoadedLibrary>> loaded_;  // by key
};

/// One cache entry, for `gt cache list`.
struct CacheEntry {
  std::string key;
  std::filesystem::path path;  // the .so
  uint64_t size_bytes = 0;     // .so and .cpp together
  std::filesystem::file_time_type mtime;
};

/// Entries of a cache dir, oldest first; empty when the dir does not exist.
std::vector<CacheEntry> list_cache(const std::filesystem::path& dir);

/// Removes every entry and temporary directories older than ten minutes (an
/// interrupted compile's); returns the number of entries removed. Loaded objects stay usable (their files are unlinked).
size_t clear_cache(const std::filesystem::path& dir);

/// A 64-bit hash of bytes (not cryptographic; stable across runs and builds).
uint64_t hash_bytes(std::string_view bytes, uint64_t seed = 0);

}  // namespace gt::worker::jit

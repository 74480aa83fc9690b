#include "worker/jit/compiler_cpu.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/check.h"
#include "common/env.h"

extern char** environ;

namespace gt::worker::jit {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kStampSymbol = "gt_jit_stamp";
constexpr size_t kMaxOutputBytes = 1 << 20;  // compiler output kept for messages
constexpr int kMessageLines = 20;            // compiler output lines in an error

// ---- processes ----------------------------------------------------------------

struct ProcessResult {
  int spawn_error = 0;  // errno of a failed start; 0 when it ran
  bool timed_out = false;
  int status = 0;       // waitpid status
  std::string output;   // stdout and stderr together
};

// Runs argv (argv[0] looked up in PATH) with stdin from /dev/null and stdout
// and stderr into one pipe; kills it after `timeout`. posix_spawn, not fork:
// the worker is multithreaded and large.
ProcessResult run_process(const std::vector<std::string>& argv, std::chrono::milliseconds timeout) {
  ProcessResult r;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    r.spawn_error = errno;
    return r;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    r.spawn_error = rc;
    return r;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      r.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    const int n = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) continue;
    const ssize_t got = read(fds[0], buf, sizeof buf);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: the child closed its output
    if (r.output.size() < kMaxOutputBytes) r.output.append(buf, got);
  }
  close(fds[0]);
  while (waitpid(pid, &r.status, 0) < 0 && errno == EINTR) {
  }
  return r;
}

std::vector<std::string> split_words(const std::string& s) {
  std::vector<std::string> words;
  std::istringstream in(s);
  for (std::string w; in >> w;) words.push_back(w);
  return words;
}

std::string first_lines(const std::string& text, int lines) {
  size_t pos = 0;
  for (int i = 0; i < lines && pos != std::string::npos; ++i) {
    pos = text.find('\n', pos);
    if (pos != std::string::npos) ++pos;
  }
  std::string out = pos == std::string::npos ? text : text.substr(0, pos);
  while (!out.empty() && (out.back() == '\n' || out.back() == '\r')) out.pop_back();
  if (pos != std::string::npos && pos < text.size()) out += "\n...";
  return out;
}

std::string describe_status(const ProcessResult& r) {
  if (r.timed_out) return "timed out and was killed";
  if (WIFEXITED(r.status)) return "exited with status " + std::to_string(WEXITSTATUS(r.status));
  if (WIFSIGNALED(r.status)) return "was killed by signal " + std::to_string(WTERMSIG(r.status));
  return "failed";
}

// PATH lookup of a program name, then symlinks resolved (c++ ->
// /etc/alternatives/c++ -> g++-12); the name itself when not found.
std::string resolve_program(const std::string& name) {
  std::error_code ec;
  if (name.find('/') != std::string::npos) {
    const fs::path p = fs::canonical(name, ec);
    return ec ? name : p.string();
  }
  const auto path = env_string("PATH");
  std::istringstream dirs(path.value_or("/usr/bin:/bin"));
  for (std::string dir; std::getline(dirs, dir, ':');) {
    const fs::path p = fs::path(dir.empty() ? "." : dir) / name;
    if (access(p.c_str(), X_OK) == 0) {
      const fs::path c = fs::canonical(p, ec);
      return ec ? p.string() : c.string();
    }
  }
  return name;
}

// The machine and the CPU's feature flags: code built with -march=native is
// only valid where both match.
std::string target_identity() {
  std::string out;
  utsname u{};
  if (uname(&u) == 0) out = u.machine;
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("flags", 0) == 0 || line.rfind("Features", 0) == 0 ||
        line.rfind("isa", 0) == 0) {
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx",
                    static_cast<unsigned long long>(hash_bytes(line)));
      out += std::string(" cpu-features:") + hex;
      break;
    }
  }
  return out;
}

std::string hex64(uint64_t x) {
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(x));
  return hex;
}

// `text` as a C string literal, split into lines.
std::string c_string_literal(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '\n') {
      out += "\\n\"\n\"";
    } else if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\' && c != '?') {
      out += static_cast<char>(c);
    } else {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\%03o", c);
      out += esc;
    }
  }
  return out + "\"";
}

bool write_file(const fs::path& path, std::string_view data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
  out.close();
  return out.good();
}

bool is_key(std::string_view s) {
  return s.size() == 32 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

// Removes a temporary directory, ignoring errors (best effort).
void remove_tree(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
}

// dlopen + stamp check. Returns null when the object's stamp differs (a
// foreign or colliding file); throws CompileError when it cannot be loaded.
std::shared_ptr<LoadedLibrary> load_checked(const fs::path& path, const std::string& stamp,
                                            bool quiet_failure) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) {
    if (quiet_failure) return nullptr;
    const char* err = dlerror();
    throw CompileError(detail::cat("[jit.compile] cannot load ", path.string(), ": ",
                                   err ? err : "unknown dlopen error"));
  }
  auto lib = std::make_shared<LoadedLibrary>(handle, path);
  dlerror();
  const auto* s = static_cast<const char*>(dlsym(handle, std::string(kStampSymbol).c_str()));
  if (!s || stamp.compare(s) != 0) return nullptr;
  return lib;
}

}  // namespace

// ---- public helpers -------------------------------------------------------------

uint64_t hash_bytes(std::string_view bytes, uint64_t seed) {
  // 8 bytes at a time through splitmix64's finaliser; length folded in last.
  auto mix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  uint64_t h = mix(seed + 0x9e3779b97f4a7c15ull);
  size_t i = 0;
  for (; i + 8 <= bytes.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, bytes.data() + i, 8);
    h = mix(h ^ mix(w + 0x9e3779b97f4a7c15ull));
  }
  uint64_t tail = 0;
  if (i < bytes.size()) std::memcpy(&tail, bytes.data() + i, bytes.size() - i);
  h = mix(h ^ mix(tail ^ (static_cast<uint64_t>(bytes.size() - i) << 56)));
  return mix(h ^ bytes.size());
}

fs::path default_cache_dir() {
  if (auto d = env_string("GT_COMPILE_CACHE_DIR")) return fs::path(*d);
  if (auto d = env_string("XDG_CACHE_HOME")) return fs::path(*d) / "gt" / "jit";
  if (auto d = env_string("HOME")) return fs::path(*d) / ".cache" / "gt" / "jit";
  std::error_code ec;
  fs::path tmp = fs::temp_directory_path(ec);
  if (ec) tmp = "/tmp";
  return tmp / ("gt-jit-" + std::to_string(getuid()));
}

std::string default_compiler() { return env_string("CXX").value_or("c++"); }

std::vector<std::string> default_cpu_flags() {
  return {"-O3", "-march=native", "-fPIC", "-shared", "-std=c++17", "-fno-math-errno",
          "-fopenmp-simd"};
}

// ---- LoadedLibrary ----------------------------------------------------------------

LoadedLibrary::LoadedLibrary(void* handle, fs::path path) : handle_(handle), path_(std::move(path)) {}

LoadedLibrary::~LoadedLibrary() {
  if (handle_) dlclose(handle_);
}

void* LoadedLibrary::symbol(const std::string& name) const {
  dlerror();
  void* p = dlsym(handle_, name.c_str());
  if (!p) {
    const char* err = dlerror();
    throw CompileError(detail::cat("[jit.compile] ", path_.string(), " has no symbol ", name,
                                   err ? std::string(": ") + err : std::string()));
  }
  return p;
}

// ---- CpuCompiler ------------------------------------------------------------------

CpuCompiler::CpuCompiler(CpuCompilerConfig config)
    : config_(std::move(config)),
      dir_(config_.cache_dir.empty() ? default_cache_dir() : config_.cache_dir) {}

std::string CpuCompiler::stamp_prefix() {
  std::lock_guard<std::mutex> lock(identity_mutex_);
  if (!stamp_prefix_.empty()) return stamp_prefix_;
  std::vector<std::string> argv = split_words(config_.compiler);
  if (argv.empty()) throw CompileError("[jit.compile] no C++ compiler configured (CXX is empty)");
  argv.push_back("--version");
  const ProcessResult r = run_process(argv, std::chrono::seconds(30));
  if (r.spawn_error != 0) {
    throw CompileError(detail::cat("[jit.compile] cannot run the C++ compiler '", config_.compiler,
                                   "': ", std::strerror(r.spawn_error),
                                   "; set CXX to a working compiler"));
  }
  if (r.timed_out || !WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0) {
    throw CompileError(detail::cat("[jit.compile] the C++ compiler '", config_.compiler,
                                   "' failed on --version (", describe_status(r), "): ",
                                   first_lines(r.output, 3)));
  }
  std::string version = first_lines(r.output, 1);
  std::ostringstream p;
  p << "gt-jit-cpu 1\n";
  p << "compiler: " << version << "\n";
  p << "compiler-path: " << resolve_program(split_words(config_.compiler)[0]) << "\n";
  p << "flags:";
  for (const std::string& f : config_.flags) p << " " << f;
  p << "\ntarget: " << target_identity() << "\n";
  stamp_prefix_ = p.str();
  return stamp_prefix_;
}

std::string CpuCompiler::stamp(const std::string& source) { return stamp_prefix() + source; }

std::string CpuCompiler::cache_key(const std::string& source) {
  const std::string s = stamp(source);
  return hex64(hash_bytes(s, 1)) + hex64(hash_bytes(s, 2));
}

CompileStats CpuCompiler::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void CpuCompiler::count_failure() {
  std::lock_guard<std::mutex> lock(mutex_);
  ++stats_.failures;
}

CompileResult CpuCompiler::compile(const std::string& source) {
  const auto start = std::chrono::steady_clock::now();
  CompileResult result;
  try {
    const std::string st = stamp(source);
    result.key = hex64(hash_bytes(st, 1)) + hex64(hash_bytes(st, 2));
    result.path = dir_ / (result.key + ".so");
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = loaded_.find(result.key);
      if (it != loaded_.end()) {
        if (auto lib = it->second.lock()) {
          ++stats_.memory_hits;
          result.library = std::move(lib);
          result.cache_hit = true;
          result.elapsed = std::chrono::steady_clock::now() - start;
          return result;
        }
      }
    }
    std::error_code ec;
    if (fs::exists(result.path, ec)) {
      // A file that does not load or carries another stamp is rebuilt below.
      if (auto lib = load_checked(result.path, st, /*quiet_failure=*/true)) {
        std::lock_guard<std::mutex> lock(mutex_);
        ++stats_.disk_hits;
        loaded_[result.key] = lib;
        result.library = std::move(lib);
        result.cache_hit = true;
        result.elapsed = std::chrono::steady_clock::now() - start;
        return result;
      }
    }

    fs::create_directories(dir_, ec);
    if (ec && !fs::is_directory(dir_)) {
      throw CompileError(detail::cat("[jit.compile] cannot create the cache dir ", dir_.string(),
                                     ": ", ec.message(), "; set GT_COMPILE_CACHE_DIR"));
    }
    std::string tmpl = (dir_ / "tmp-XXXXXX").string();
    if (!mkdtemp(tmpl.data())) {
      throw CompileError(detail::cat("[jit.compile] cannot create a temporary directory in ",
                                     dir_.string(), ": ", std::strerror(errno)));
    }
    const fs::path tmp = tmpl;
    struct Cleanup {
      fs::path p;
      ~Cleanup() { remove_tree(p); }
    } cleanup{tmp};

    const fs::path src = tmp / "unit.cpp";
    const fs::path obj = tmp / "unit.so";
    std::string text = source;
    text += "\n// Note [compile cache]: the stamp this object was built from.\n";
    text += "extern \"C\" { extern const char gt_jit_stamp[]; }\n";
    text += "extern \"C\" __attribute__((visibility(\"default\"))) const char gt_jit_stamp[] =\n";
    text += c_string_literal(st);
    text += ";\n";
    if (!write_file(src, text)) {
      throw CompileError(detail::cat("[jit.compile] cannot write ", src.string()));
    }
    std::vector<std::string> argv = split_words(config_.compiler);
    argv.insert(argv.end(), config_.flags.begin(), config_.flags.end());
    argv.insert(argv.end(), {"-o", obj.string(), src.string()});
    const ProcessResult r =
        run_process(argv, std::chrono::duration_cast<std::chrono::milliseconds>(config_.timeout));
    if (r.spawn_error != 0) {
      throw CompileError(detail::cat("[jit.compile] cannot run the C++ compiler '",
                                     config_.compiler, "': ", std::strerror(r.spawn_error),
                                     "; set CXX to a working compiler"));
    }
    if (r.timed_out || !WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0) {
      throw CompileError(detail::cat("[jit.compile] ", config_.compiler, " ", describe_status(r),
                                     " compiling ", src.string(), ":\n",
                                     first_lines(r.output, kMessageLines)));
    }
    // Source first, so an entry's .so never lacks its .cpp for long; only the
    // .so is ever read back.
    fs::rename(src, dir_ / (result.key + ".cpp"), ec);
    fs::rename(obj, result.path, ec);
    if (ec) {
      throw CompileError(detail::cat("[jit.compile] cannot move ", obj.string(), " to ",
                                     result.path.string(), ": ", ec.message()));
    }
    auto lib = load_checked(result.path, st, /*quiet_failure=*/false);
    if (!lib) {
      throw CompileError(detail::cat("[jit.compile] ", result.path.string(),
                                     " does not carry the stamp it was built with"));
    }
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.compiles;
    loaded_[result.key] = lib;
    result.library = std::move(lib);
    result.cache_hit = false;
    result.elapsed = std::chrono::steady_clock::now() - start;
    return result;
  } catch (...) {
    count_failure();
    throw;
  }
}

// ---- cache maintenance ------------------------------------------------------------

std::vector<CacheEntry> list_cache(const fs::path& dir) {
  std::vector<CacheEntry> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const fs::path& p = e.path();
    if (p.extension() != ".so" || !is_key(p.stem().string())) continue;
    CacheEntry entry;
    entry.key = p.stem().string();
    entry.path = p;
    std::error_code e1, e2;
    entry.size_bytes = fs::file_size(p, e1);
    const uint64_t cpp = fs::file_size(fs::path(p).replace_extension(".cpp"), e2);
    if (!e2) entry.size_bytes += cpp;
    entry.mtime = fs::last_write_time(p, e1);
    if (!e1) out.push_back(std::move(entry));
  }
  std::sort(out.begin(), out.end(),
            [](const CacheEntry& a, const CacheEntry& b) { return a.mtime < b.mtime; });
  return out;
}

size_t clear_cache(const fs::path& dir) {
  size_t removed = 0;
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (const auto& item : fs::directory_iterator(dir, ec)) {
    const fs::path& p = item.path();
    const std::string name = p.filename().string();
    const bool entry = (p.extension() == ".so" || p.extension() == ".cpp") && is_key(p.stem().string());
    // Only names this module writes: a cache dir set to the wrong place loses
    // nothing else. A temporary dir may belong to a compile running now in
    // another worker; only old ones are stale.
    const bool tmp = name.rfind("tmp-", 0) == 0 && name.size() == 10;
    std::error_code e;
    const bool stale =
        tmp && fs::last_write_time(p, e) < fs::file_time_type::clock::now() - std::chrono::minutes(10);
    if (entry || (stale && !e)) doomed.push_back(p);
  }
  for (const fs::path& p : doomed) {
    const bool so = p.extension() == ".so";
    std::error_code e;
    if (fs::remove_all(p, e) > 0 && so) ++removed;
  }
  return removed;
}

}  // namespace gt::worker::jit

#pragma once
// The rendezvous store: a small key/value service the ranks of a communicator
// use to find each other (listening addresses, join markers). Only a few
// hundred bytes per rank pass through it; tensor data never does. The
// dispatcher serves one over ZeroMQ; InMemoryStore and FileStore serve tests
// and single-machine runs.

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

namespace gt::worker::collectives {

/// Key/value store with blocking reads. Keys are arbitrary strings; a later
/// set of the same key replaces the value. Implementations are thread-safe.
/// Waiting past the timeout is an expected outcome and comes back as a value
/// (nullopt, or the keys still missing), not an exception; transport failures
/// of a remote store throw gt::Error.
class Store {
 public:
  virtual ~Store() = default;

  /// Stores `value` under `key`.
  virtual void set(const std::string& key, const std::vector<char>& value) = 0;

  /// The value of `key`, waiting up to `timeout` for it to be set; nullopt
  /// when it was not set in time.
  [[nodiscard]] virtual std::optional<std::vector<char>> get(const std::string& key,
                                                             std::chrono::milliseconds timeout) = 0;

  /// Waits up to `timeout` until every key is set; returns the keys still
  /// missing (empty: all set). A zero timeout only checks.
  [[nodiscard]] virtual std::vector<std::string> wait(const std::vector<std::string>& keys,
                                                      std::chrono::milliseconds timeout) = 0;
};

/// A store in this process's memory, for ranks that are threads of one
/// process (tests). Thread-safe; waits block on a condition variable.
class InMemoryStore final : public Store {
 public:
  void set(const std::string& key, const std::vector<char>& value) override;
  [[nodiscard]] std::optional<std::vector<char>> get(const std::string& key,
                                                     std::chrono::milliseconds timeout) override;
  [[nodiscard]] std::vector<std::string> wait(const std::vector<std::string>& keys,
                                              std::chrono::milliseconds timeout) override;

 private:
  std::mutex mutex_;
  std::condition_variable changed_;                  // notified on every set
  std::map<std::string, std::vector<char>> values_;  // guarded by mutex_
};

/// A store in a directory that every rank can reach (same machine or a
/// shared file system): one file per key, written to a temporary name and
/// renamed, so readers never see a partial value. Reads poll (1 to 10 ms).
/// The directory is created if missing and never cleaned up by the store.
class FileStore final : public Store {
 public:
  /// Throws gt::Error when the directory cannot be created.
  explicit FileStore(std::filesystem::path dir);

  void set(const std::string& key, const std::vector<char>& value) override;
  [[nodiscard]] std::optional<std::vector<char>> get(const std::string& key,
                                                     std::chrono::milliseconds timeout) override;
  [[nodiscard]] std::vector<std::string> wait(const std::vector<std::string>& keys,
                                              std::chrono::milliseconds timeout) override;

  const std::filesystem::path& dir() const { return dir_; }

 private:
  /// The file holding `key` (characters outside [A-Za-z0-9._-] escaped).
  std::filesystem::path path_of(const std::string& key) const;
  std::optional<std::vector<char>> read(const std::string& key) const;

  std::filesystem::path dir_;
};

}  // namespace gt::worker::collectives

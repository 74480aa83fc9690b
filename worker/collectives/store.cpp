#include "worker/collectives/store.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <system_error>
#include <thread>

#include <gt/error.h>

#include "common/check.h"

namespace gt::worker::collectives {

// ---- InMemoryStore ---------------------------------------------------------

void InMemoryStore::set(const std::string& key, const std::vector<char>& value) {
  {
    std::lock_guard lock(mutex_);
    values_[key] = value;
  }
  changed_.notify_all();
}

std::optional<std::vector<char>> InMemoryStore::get(const std::string& key,
                                                    std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!changed_.wait_for(lock, timeout, [&] { return values_.count(key) != 0; })) {
    return std::nullopt;
  }
  return values_.at(key);
}

std::vector<std::string> InMemoryStore::wait(const std::vector<std::string>& keys,
                                             std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  auto all_set = [&] {
    return std::all_of(keys.begin(), keys.end(),
                       [&](const std::string& k) { return values_.count(k) != 0; });
  };
  changed_.wait_for(lock, timeout, all_set);
  std::vector<std::string> missing;
  for (const std::string& k : keys) {
    if (values_.count(k) == 0) missing.push_back(k);
  }
  return missing;
}

// ---- FileStore -------------------------------------------------------------

namespace {

/// Polls `ready` until it returns true or `timeout` passes, sleeping 1 ms
/// at first and backing off to 10 ms (a rendezvous takes milliseconds; a
/// long wait is a peer that is still starting).
template <typename Ready>
bool poll_until(std::chrono::milliseconds timeout, Ready ready) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  auto pause = std::chrono::milliseconds(1);
  while (true) {
    if (ready()) return true;
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return false;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(pause, deadline - now));
    pause = std::min(pause * 2, std::chrono::milliseconds(10));
  }
}

}  // namespace

FileStore::FileStore(std::filesystem::path dir) : dir_(std::move(dir)) {
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec) {
    throw Error(detail::cat("[collectives.FileStore] cannot create the store directory ",
                            dir_.string(), ": ", ec.message()));
  }
}

std::filesystem::path FileStore::path_of(const std::string& key) const {
  GT_CHECK(!key.empty(), "[collectives.FileStore] empty key: expected a non-empty key");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string name;
  name.reserve(key.size());
  for (unsigned char c : key) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
        c == '-') {
      name += static_cast<char>(c);
    } else {
      // '.' is escaped too, so no key maps to "." or ".." or to the
      // ".tmp-" names set() writes before renaming.
      name += '%';
      name += kHex[c >> 4];
      name += kHex[c & 15];
    }
  }
  return dir_ / name;
}

void FileStore::set(const std::string& key, const std::vector<char>& value) {
  static std::atomic<uint64_t> counter{0};
  const std::filesystem::path target = path_of(key);
  const std::filesystem::path tmp =
      dir_ / detail::cat(".tmp-", ::getpid(), "-", counter.fetch_add(1));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(value.data(), static_cast<std::streamsize>(value.size()));
    out.close();
    if (!out) {
      throw Error(detail::cat("[collectives.FileStore.set] cannot write ", tmp.string(),
                              " for key '", key, "': ", std::strerror(errno)));
    }
  }
  std::error_code ec;
  std::filesystem::rename(tmp, target, ec);  // atomic: readers see all or nothing
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw Error(detail::cat("[collectives.FileStore.set] cannot rename ", tmp.string(), " to ",
                            target.string(), " for key '", key, "': ", ec.message()));
  }
}

std::optional<std::vector<char>> FileStore::read(const std::string& key) const {
  std::ifstream in(path_of(key), std::ios::binary);
  if (!in) return std::nullopt;
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::optional<std::vector<char>> FileStore::get(const std::string& key,
                                                std::chrono::milliseconds timeout) {
  std::optional<std::vector<char>> value;
  poll_until(timeout, [&] {
    value = read(key);
    return value.has_value();
  });
  return value;
}

std::vector<std::string> FileStore::wait(const std::vector<std::string>& keys,
                                         std::chrono::milliseconds timeout) {
  std::vector<std::string> missing = keys;
  poll_until(timeout, [&] {
    std::erase_if(missing, [&](const std::string& k) {
      std::error_code ec;
      return std::filesystem::exists(path_of(k), ec);
    });
    return missing.empty();
  });
  return missing;
}

}  // namespace gt::worker::collectives

#pragma once
// A private temporary directory for a test, removed with its contents when
// the object goes away. Header-only: unit test binaries use it without
// linking the cluster support.

#include <stdlib.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>

namespace gt::test {

class TempDir {
 public:
  /// mkdtemp under the system's temp directory, named `<prefix>-XXXXXX`.
  explicit TempDir(std::string_view prefix = "gt-test") {
    std::string tmpl =
        (std::filesystem::temp_directory_path() / (std::string(prefix) + "-XXXXXX")).string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      throw std::runtime_error("mkdtemp failed for " + tmpl);
    }
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  /// A path inside the directory.
  std::string operator/(std::string_view name) const { return (path / name).string(); }
  std::string file(std::string_view name) const { return *this / name; }

  std::filesystem::path path;
};

}  // namespace gt::test

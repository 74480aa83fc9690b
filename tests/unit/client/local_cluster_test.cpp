#include <chrono>
#include <filesystem>
#include <fstream>
#include <thread>

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <gt/error.h>

#include "client/internal/local_cluster.h"
#include "client/internal/session.h"
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
using namespace gt::client;
using namespace std::chrono_literals;

namespace {

using gt::test::TempDir;

std::string write_script(const fs::path& path, const std::string& body) {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
  ::chmod(path.c_str(), 0755);
  return path.string();
}

bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

}  // namespace

TEST_CASE("executable candidates follow the documented order", "[cluster][unit]") {
  ExecutableSearch s;
  s.library_dir = "/opt/gt/lib";
  s.build_bindir = "/build/bin";
  s.install_bindir = "/usr/local/bin";
  s.path = "/usr/bin::/bin";
  CHECK(executable_candidates(s) ==
        std::vector<std::string>{"/opt/gt/bin/gt", "/build/bin/gt", "/usr/local/bin/gt",
                                 "/usr/bin/gt", "gt", "/bin/gt"});
}

TEST_CASE("find_executable takes the first existing candidate", "[cluster][unit]") {
  TempDir dir;
  const auto install = dir.path / "install" / "bin";
  const auto on_path = dir.path / "path";
  write_script(install / "gt", "exit 0");
  write_script(on_path / "gt", "exit 0");
  ExecutableSearch s;
  s.library_dir = (dir.path / "lib").string();  // ../bin/gt does not exist
  s.build_bindir = (dir.path / "build" / "bin").string();
  s.install_bindir = install.string();
  s.path = on_path.string();
  CHECK(find_executable(s) == (install / "gt").string());
  s.install_bindir.clear();
  CHECK(find_executable(s) == (on_path / "gt").string());
  // A non-executable file does not count.
  fs::create_directories(dir.path / "build" / "bin");
  std::ofstream(dir.path / "build" / "bin" / "gt") << "not executable";
  CHECK(find_executable(s) == (on_path / "gt").string());
}

TEST_CASE("find_executable honours GT_EXECUTABLE and reports where it looked",
          "[cluster][unit]") {
  TempDir dir;
  const auto exe = write_script(dir.path / "my-gt", "exit 0");
  ExecutableSearch s;
  s.env_executable = exe;
  s.build_bindir = "/nonexistent/build/bin";
  CHECK(find_executable(s) == exe);

  s.env_executable = (dir.path / "missing").string();
  CHECK_THROWS_WITH(find_executable(s), Catch::Contains("GT_EXECUTABLE") &&
                                            Catch::Contains("missing"));

  s.env_executable.reset();
  s.library_dir = "/nonexistent/lib";
  s.install_bindir = "/nonexistent/install/bin";
  s.path = "/nonexistent/path";
  CHECK_THROWS_AS(find_executable(s), gt::Error);
  CHECK_THROWS_WITH(find_executable(s),
                    Catch::Contains("/nonexistent/bin/gt") &&
                        Catch::Contains("/nonexistent/build/bin/gt") &&
                        Catch::Contains("/nonexistent/install/bin/gt") &&
                        Catch::Contains("/nonexistent/path/gt") &&
                        Catch::Contains("set GT_EXECUTABLE"));
}

TEST_CASE("local cluster starts its processes and stops them", "[cluster][unit]") {
  TempDir dir;
  LocalClusterOptions o;
  o.executable = write_script(dir.path / "gt", "exec sleep 30");
  o.workers = 2;
  std::vector<pid_t> pids;
  std::string directory;
  {
    LocalCluster a(o);
    LocalCluster b(o);
    CHECK(a.directory() != b.directory());  // two programs never collide
    CHECK(a.endpoint() == "ipc://" + a.directory() + "/dispatcher");
    CHECK(fs::is_directory(a.directory()));
    pids = a.pids();
    REQUIRE(pids.size() == 3);
    for (pid_t p : pids) CHECK(alive(p));
    CHECK_FALSE(a.dead_child().has_value());
    directory = a.directory();
    const auto t0 = std::chrono::steady_clock::now();
    a.stop();
    CHECK(std::chrono::steady_clock::now() - t0 < 1500ms);
    CHECK(a.pids().empty());
  }
  for (pid_t p : pids) CHECK_FALSE(alive(p));
  CHECK_FALSE(fs::exists(directory));
}

TEST_CASE("local cluster reports a child that exits", "[cluster][unit]") {
  TempDir dir;
  LocalClusterOptions o;
  o.executable = write_script(dir.path / "gt",
                              "if [ \"$1\" = worker ]; then exit 3; fi\nexec sleep 30");
  LocalCluster c(o);
  std::optional<std::string> dead;
  for (int i = 0; i < 400 && !dead; ++i) {
    dead = c.dead_child();
    if (!dead) std::this_thread::sleep_for(5ms);
  }
  REQUIRE(dead.has_value());
  CHECK_THAT(*dead, Catch::Contains("worker 0") && Catch::Contains("exited with status 3") &&
                        Catch::Contains("--connect " + c.endpoint()) &&
                        Catch::Contains("--device cpu") && Catch::Contains("--threads"));
  CHECK_FALSE(c.dead_dispatcher().has_value());
}

TEST_CASE("a local cluster that dies during start-up fails the session quickly",
          "[cluster][session][unit]") {
  TempDir dir;
  SessionOptions o;
  o.executable = write_script(dir.path / "gt", "exit 2");
  o.connect_timeout = 10s;
  const auto t0 = std::chrono::steady_clock::now();
  try {
    Session::start(o);
    FAIL("Session::start succeeded without a dispatcher");
  } catch (const gt::TransportError& e) {
    CHECK_THAT(std::string(e.what()), Catch::Contains("failed to start") &&
                                          Catch::Contains("exited with status 2"));
  }
  CHECK(std::chrono::steady_clock::now() - t0 < 3s);
}

// The zero-set-up path: programs that start their own local cluster.

#include <catch2/catch.hpp>

#include <dirent.h>
#include <stdio.h>

#include <fstream>
#include <future>
#include <sstream>

#include <gt/gt.h>

#include "tests/support/cluster.h"

namespace {

std::string run_program(const std::string& cmd) {
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[256];
  while (fgets(buf, sizeof buf, p)) out += buf;
  const int status = pclose(p);
  CHECK(status == 0);
  return out;
}

// A private TMPDIR: local clusters put their ipc endpoints there, so the
// processes of this test's clusters are those whose command line names it.
std::string private_tmpdir() {
  char tmpl[] = "/tmp/gt-cluster-test-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}

int count_processes_mentioning(const std::string& marker) {
  int n = 0;
  DIR* d = opendir("/proc");
  while (dirent* e = readdir(d)) {
    if (!std::isdigit(static_cast<unsigned char>(e->d_name[0]))) continue;
    std::ifstream f(std::string("/proc/") + e->d_name + "/cmdline");
    std::stringstream ss;
    ss << f.rdbuf();
    std::string cmd = ss.str();
    for (auto& c : cmd) c = c ? c : ' ';
    if (cmd.find(marker) != std::string::npos) ++n;
  }
  closedir(d);
  return n;
}

}  // namespace

TEST_CASE("two programs that auto-start clusters run side by side without colliding",
          "[cluster][integration]") {
  const std::string tmp = private_tmpdir();
  const std::string env = "env -u GT_DISPATCHER TMPDIR=" + tmp +
                          " GT_EXECUTABLE=" + gt::test::gt_executable() + " ";
  const std::string prog = GT_AUTO_PROGRAM;
  auto a = std::async(std::launch::async, [&] { return run_program(env + prog + " 1000"); });
  auto b = std::async(std::launch::async, [&] { return run_program(env + "GT_WORKERS=2 " + prog + " 10"); });
  CHECK(a.get() == "n=1000 sum=999000\n");
  CHECK(b.get() == "n=10 sum=90\n");
  // both clusters were torn down with their programs
  CHECK(count_processes_mentioning(tmp) == 0);
}

TEST_CASE("the local cluster starts in-process and stops at shutdown", "[cluster][integration]") {
  const std::string tmp = private_tmpdir();
  unsetenv("GT_DISPATCHER");
  setenv("TMPDIR", tmp.c_str(), 1);
  setenv("GT_EXECUTABLE", gt::test::gt_executable().c_str(), 1);
  auto x = gt::ones({3, 3});
  CHECK(x.sum().item<float>() == 9.f);
  CHECK(count_processes_mentioning(tmp) == 2);  // dispatcher + one worker
  gt::shutdown();
  CHECK(count_processes_mentioning(tmp) == 0);
}

TEST_CASE("a missing gt executable is a clear error", "[cluster][integration]") {
  unsetenv("GT_DISPATCHER");
  setenv("GT_EXECUTABLE", "/nonexistent/gt", 1);
  CHECK_THROWS_WITH(gt::ones({1}), Catch::Contains("/nonexistent/gt"));
}

// `gt launch`: a dispatcher and N workers started by one command, used by a
// program through GT_DISPATCHER-style connect, stopped by SIGTERM.

#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gt/gt.h>

#include "tests/support/cluster.h"
#include "tests/support/temp_dir.h"
#include "tools/monitor.h"

namespace {

using namespace std::chrono_literals;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Starts `gt launch ARGS...` with stdout/stderr into files in `dir`.
pid_t spawn_launch(const gt::test::TempDir& dir, std::vector<std::string> args) {
  const std::string gt = gt::test::gt_executable();
  args.insert(args.begin(), {gt, "launch"});
  const pid_t pid = ::fork();
  if (pid == 0) {
    std::freopen((dir / "out").c_str(), "w", stdout);
    std::freopen((dir / "err").c_str(), "w", stderr);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(gt.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}


}  // namespace

TEST_CASE("gt launch starts a dispatcher and N workers that programs use", "[launch][integration]") {
  gt::shutdown();
  gt::test::TempDir dir;
  const std::string endpoint_file = dir / "endpoint";
  const pid_t launch = spawn_launch(dir, {"--workers", "2", "--endpoint-file", endpoint_file});
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (!std::filesystem::exists(endpoint_file) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  INFO(read_file(dir / "err"));
  REQUIRE(std::filesystem::exists(endpoint_file));
  std::string endpoint = read_file(endpoint_file);
  while (!endpoint.empty() && endpoint.back() == '\n') endpoint.pop_back();
  CHECK(endpoint.rfind("tcp://127.0.0.1:", 0) == 0);
  CHECK_THAT(read_file(dir / "out"), Catch::Contains(endpoint) && Catch::Contains("2 cpu workers"));

  // Both workers registered before the endpoint file appeared.
  gt::connect(endpoint);
  const gt::Tensor x = gt::full({3}, 2.0) * 3.0;
  CHECK(x.to_vector<float>() == std::vector<float>{6, 6, 6});
  CHECK(gt::debug::stats().workers.size() == 2);
  gt::shutdown();

  ::kill(launch, SIGTERM);
  CHECK(gt::test::wait_exit(launch, 20s) == 0);
  CHECK_THAT(read_file(dir / "err"), Catch::Contains("stopping"));
  // The processes are gone with it: nothing answers at the endpoint.
  CHECK_THROWS_AS(gt::tools::ask_dispatcher(endpoint, 500ms), gt::TransportError);
}

TEST_CASE("gt launch refuses bad arguments with a clear message", "[launch][integration]") {
  gt::test::TempDir dir;
  const pid_t bad_device = spawn_launch(dir, {"--workers", "1", "--device", "tpu:0"});
  CHECK(gt::test::wait_exit(bad_device, 20s) == 1);
  CHECK_THAT(read_file(dir / "err"), Catch::Contains("tpu:0") && Catch::Contains("cpu or cuda:N"));

  const pid_t bad_endpoint = spawn_launch(dir, {"--listen", "nowhere"});
  CHECK(gt::test::wait_exit(bad_endpoint, 20s) == 1);
  CHECK_THAT(read_file(dir / "err"), Catch::Contains("nowhere"));

  std::ofstream(dir / "bad.yaml") << "forward:\n  shard: {axis: 0, workers: [0, 5]}\n";
  const pid_t bad_config = spawn_launch(dir, {"--workers", "2", "--config", dir / "bad.yaml"});
  CHECK(gt::test::wait_exit(bad_config, 20s) == 1);
  CHECK_THAT(read_file(dir / "err"),
             Catch::Contains("bad.yaml") && Catch::Contains("forward.shard.workers"));
}

// CurveZMQ between real processes on loopback (docs/security.md): a CURVE
// dispatcher serves peers whose keys it lists and refuses the others, tools
// need keys for the event stream too, plaintext binds are refused off
// loopback, and gt keygen writes key files.

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include <gt/gt.h>

#include "common/env.h"
#include "common/security.h"
#include "common/transport.h"
#include "tests/support/cluster.h"
#include "tests/support/temp_dir.h"
#include "tools/monitor.h"

extern char** environ;

namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using gt::test::TempDir;

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Starts `gt ARGS...` with the test's environment minus every security
// variable and GT_DISPATCHER, plus `env`; stdout and stderr go to `log`.
pid_t spawn_gt(std::vector<std::string> args, const std::map<std::string, std::string>& env,
               const std::string& log) {
  const std::string gt = gt::test::gt_executable();
  args.insert(args.begin(), gt);
  std::vector<std::string> envp;
  for (char** e = environ; e && *e; ++e) {
    const std::string entry(*e);
    if (entry.rfind("GT_CURVE_", 0) == 0 || entry.rfind("GT_ALLOW_PLAINTEXT=", 0) == 0 ||
        entry.rfind("GT_DISPATCHER=", 0) == 0) {
      continue;
    }
    envp.push_back(entry);
  }
  for (const auto& [k, v] : env) envp.push_back(k + "=" + v);
  std::vector<char*> argv, envv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : envp) envv.push_back(e.data());
  envv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    // dup2, not freopen: that would flush a copy of the test's stdout buffer.
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
    }
    ::execve(gt.c_str(), argv.data(), envv.data());
    ::_exit(127);
  }
  return pid;
}

// Runs `gt ARGS...` to its end (at most `limit`): exit code and output.
std::pair<int, std::string> run_gt(const TempDir& dir, std::vector<std::string> args,
                                   const std::map<std::string, std::string>& env = {},
                                   std::chrono::seconds limit = 30s) {
  static int runs = 0;
  const std::string log = dir / ("run" + std::to_string(++runs) + ".log");
  const int code = gt::test::wait_exit(spawn_gt(std::move(args), env, log), limit);
  return {code, read_file(log)};
}

bool wait_for_file(const std::string& path, pid_t owner, std::chrono::seconds limit) {
  const auto deadline = Clock::now() + limit;
  while (!std::filesystem::exists(path)) {
    if (Clock::now() > deadline || ::waitpid(owner, nullptr, WNOHANG) == owner) return false;
    std::this_thread::sleep_for(10ms);
  }
  return true;
}

std::string read_endpoint(const std::string& path) {
  std::string e = read_file(path);
  while (!e.empty() && (e.back() == '\n' || e.back() == '\r')) e.pop_back();
  return e;
}

// Key pairs of a dispatcher, a worker, a client and an intruder (whose key
// the dispatcher does not list), written by gt keygen's code.
struct Keys {
  Keys() {
    for (const char* name : {"dispatcher", "worker", "client", "intruder"}) {
      pairs[name] = gt::generate_curve_key_pair();
      gt::write_key_files(dir / name, pairs[name], false);
    }
    std::ofstream(authorized) << "# who may connect\n"
                              << read_file(dir / "worker.pub") << read_file(dir / "client.pub");
  }
  std::string key(const std::string& name) const { return dir / (name + ".key"); }
  std::string pub(const std::string& name) const { return dir / (name + ".pub"); }
  // A dispatcher's and its workers' environment: one set for both (each
  // process reads the variables of its side).
  std::map<std::string, std::string> cluster_env() const {
    return {{"GT_CURVE_SECRET_KEY", key("dispatcher")},
            {"GT_CURVE_AUTHORIZED_KEYS", authorized},
            {"GT_CURVE_SERVER_KEY", pub("dispatcher")},
            {"GT_CURVE_CLIENT_KEY", key("worker")}};
  }
  std::map<std::string, std::string> peer_env(const std::string& name) const {
    return {{"GT_CURVE_SERVER_KEY", pub("dispatcher")}, {"GT_CURVE_CLIENT_KEY", key(name)}};
  }
  // No secret of any pair appears in `text`.
  bool no_secrets_in(const std::string& text) const {
    for (const auto& [name, pair] : pairs) {
      if (contains(text, pair.secret_key)) return false;
    }
    return true;
  }
  TempDir dir{"gt-keys"};
  std::string authorized = dir / "authorized_keys";
  std::map<std::string, gt::CurveKeyPair> pairs;
};

// The process' session with `keys` set the way a user sets them.
struct ClientEnv {
  ClientEnv(const std::optional<std::string>& server_key,
            const std::optional<std::string>& client_key, const char* connect_timeout_ms = "3000")
      : server("GT_CURVE_SERVER_KEY", server_key),
        client("GT_CURVE_CLIENT_KEY", client_key),
        timeout("GT_CONNECT_TIMEOUT_MS", connect_timeout_ms) {}
  gt::ScopedEnv server, client, timeout;
};

// Waits until `n` workers have registered, asking as a tool with `keys`.
void wait_workers(const Keys& keys, const std::string& endpoint, uint32_t n) {
  ClientEnv env(keys.pub("dispatcher"), keys.key("client"));
  const auto deadline = Clock::now() + 30s;
  while (gt::tools::ask_dispatcher(endpoint, 5s).workers < n && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  REQUIRE(gt::tools::ask_dispatcher(endpoint, 5s).workers == n);
}

void check_computes() {
  const gt::Tensor x = gt::arange(0.0, 6.0, 1.0).reshape({2, 3});
  const gt::Tensor y = (x.matmul(x.t()) + 1.0).relu();
  CHECK(y.to_vector<float>() == std::vector<float>{6, 15, 15, 51});
  CHECK(x.sum().item<float>() == 15.0f);
}

// gt::connect's TransportError message, and how long it took to fail.
std::pair<std::string, Clock::duration> connect_failure(const std::string& endpoint) {
  const auto t0 = Clock::now();
  try {
    gt::connect(endpoint);
  } catch (const gt::TransportError& e) {
    return {e.what(), Clock::now() - t0};
  }
  gt::shutdown();
  FAIL("gt::connect to " << endpoint << " succeeded");
  return {};
}

}  // namespace

TEST_CASE("a CURVE dispatcher serves clients and workers whose keys it lists, and no others",
          "[security][integration]") {
  gt::shutdown();
  Keys keys;
  gt::test::TestCluster cluster(2, keys.cluster_env());
  const std::string endpoint = cluster.endpoint();
  REQUIRE(endpoint.rfind("tcp://127.0.0.1:", 0) == 0);
  wait_workers(keys, endpoint, 2);  // both workers authenticated
  {
    ClientEnv env(keys.pub("dispatcher"), keys.key("client"));
    gt::connect(endpoint);
    check_computes();
    CHECK(gt::debug::stats().workers.size() == 2);
    gt::shutdown();
  }
  {
    ClientEnv env(keys.pub("dispatcher"), keys.key("intruder"), "2000");
    const auto [message, took] = connect_failure(endpoint);
    CHECK_THAT(message, Catch::Contains(endpoint) && Catch::Contains("authentication failed") &&
                            Catch::Contains("GT_CURVE_AUTHORIZED_KEYS"));
    CHECK(took < 2500ms);
  }
  {
    ClientEnv env(std::nullopt, std::nullopt, "2000");
    const auto [message, took] = connect_failure(endpoint);
    CHECK_THAT(message, Catch::Contains("requires CURVE") &&
                            Catch::Contains("GT_CURVE_SERVER_KEY"));
    CHECK(took < 2500ms);
  }
  {
    // The client's own keys with the wrong server key: the dispatcher cannot
    // read its handshake; the timeout says CURVE is on.
    ClientEnv env(keys.pub("worker"), keys.key("client"), "1000");
    const auto [message, took] = connect_failure(endpoint);
    CHECK_THAT(message, Catch::Contains("no Welcome") && Catch::Contains("CURVE is on"));
  }
  {
    // A bad key file is a ConfigError naming the variable and the file.
    ClientEnv env(keys.pub("dispatcher"), keys.pub("client"));
    CHECK_THROWS_AS(gt::connect(endpoint), gt::ConfigError);
    CHECK_THROWS_WITH(gt::connect(endpoint),
                      Catch::Contains("GT_CURVE_CLIENT_KEY=" + keys.pub("client")));
  }

  // A worker with an unlisted key, or none, is refused and exits 1.
  TempDir dir;
  const auto [code, out] = run_gt(dir, {"worker", "--connect", endpoint, "--threads", "1"},
                                  keys.peer_env("intruder"));
  CHECK(code == 1);
  CHECK_THAT(out, Catch::Contains("refused this worker") &&
                      Catch::Contains("authentication failed"));
  const auto [plain_code, plain_out] =
      run_gt(dir, {"worker", "--connect", endpoint, "--threads", "1"});
  CHECK(plain_code == 1);
  CHECK_THAT(plain_out, Catch::Contains("requires CURVE"));

  // The dispatcher logged each refusal with the address and the public key,
  // and is still serving.
  const std::string log = cluster.dispatcher_log();
  CHECK_THAT(log, Catch::Contains("refused a connection from 127.0.0.1") &&
                      Catch::Contains(keys.pairs["intruder"].public_key));
  CHECK(keys.no_secrets_in(log));
  {
    ClientEnv env(keys.pub("dispatcher"), keys.key("client"));
    gt::connect(endpoint);
    check_computes();
    gt::shutdown();
  }
}

TEST_CASE("the event stream of a CURVE dispatcher needs an authorized key too",
          "[security][integration]") {
  gt::shutdown();
  Keys keys;
  gt::test::TestCluster cluster(1, keys.cluster_env());
  const std::string endpoint = cluster.endpoint();
  wait_workers(keys, endpoint, 1);
  TempDir dir;

  const auto [top_code, top_out] =
      run_gt(dir, {"top", "--endpoint", endpoint, "--frames", "1", "--interval-ms", "100"},
             keys.peer_env("client"));
  CHECK(top_code == 0);
  CHECK_THAT(top_out, Catch::Contains("WORKER 0"));
  const auto [plain_code, plain_out] = run_gt(dir, {"top", "--endpoint", endpoint, "--frames", "1"});
  CHECK(plain_code == 1);
  CHECK_THAT(plain_out, Catch::Contains(endpoint) && Catch::Contains("requires CURVE"));
  const auto [intruder_code, intruder_out] =
      run_gt(dir, {"trace", "-s", "0.5", "--dir", dir.path.string(), "--endpoint", endpoint},
             keys.peer_env("intruder"));
  CHECK(intruder_code == 1);
  CHECK_THAT(intruder_out, Catch::Contains("authentication failed"));
  const auto [trace_code, trace_out] =
      run_gt(dir, {"trace", "-s", "0.5", "--dir", dir.path.string(), "--endpoint", endpoint},
             keys.peer_env("client"));
  INFO(trace_out);
  CHECK(trace_code == 0);

  // Straight at the stream: a subscriber without keys gets nothing while
  // one with keys gets the STATS it asked for.
  ClientEnv env(keys.pub("dispatcher"), keys.key("client"));
  const std::string events = gt::tools::events_endpoint(endpoint, 5s);
  zmq::context_t context(1);
  zmq::socket_t plain(context, zmq::socket_type::sub);
  plain.set(zmq::sockopt::linger, 0);
  plain.set(zmq::sockopt::subscribe, "");
  plain.connect(events);
  gt::tools::EventSubscriber keyed(events, {"stats"});
  size_t received = 0;
  const auto deadline = Clock::now() + 10s;
  while (received == 0 && Clock::now() < deadline) received += keyed.poll(200ms).size();
  CHECK(received > 0);
  std::this_thread::sleep_for(300ms);  // more STATS went out meanwhile
  zmq::message_t m;
  CHECK_FALSE(plain.recv(m, zmq::recv_flags::dontwait));
}

TEST_CASE("a dispatcher binds a non-loopback endpoint only with keys or GT_ALLOW_PLAINTEXT=1",
          "[security][integration]") {
  TempDir dir;
  for (const char* listen : {"tcp://0.0.0.0:0", "tcp://*:0"}) {
    const auto [code, out] = run_gt(dir, {"dispatcher", "--listen", listen}, {}, 20s);
    INFO(out);
    CHECK(code == 1);
    CHECK_THAT(out, Catch::Contains(listen) && Catch::Contains("GT_CURVE_SECRET_KEY") &&
                        Catch::Contains("GT_ALLOW_PLAINTEXT=1"));
  }
  const auto [events_code, events_out] = run_gt(
      dir, {"dispatcher", "--listen", "tcp://127.0.0.1:0", "--events", "tcp://0.0.0.0:0"}, {}, 20s);
  CHECK(events_code == 1);
  CHECK_THAT(events_out, Catch::Contains("event stream") && Catch::Contains("tcp://0.0.0.0:0"));

  // Allowed explicitly: it binds (and warns); SIGTERM stops it cleanly.
  Keys keys;
  const std::map<std::string, std::string> allowed{{"GT_ALLOW_PLAINTEXT", "1"}};
  const std::map<std::string, std::string> with_keys{
      {"GT_CURVE_SECRET_KEY", keys.key("dispatcher")},
      {"GT_CURVE_AUTHORIZED_KEYS", keys.authorized}};
  for (const auto* env : {&allowed, &with_keys}) {
    const std::string file = dir / "endpoint", log = dir / "dispatcher.log";
    std::filesystem::remove(file);
    const pid_t pid =
        spawn_gt({"dispatcher", "--listen", "tcp://0.0.0.0:0", "--endpoint-file", file}, *env, log);
    const bool bound = wait_for_file(file, pid, 20s);
    INFO(read_file(log));
    CHECK(bound);
    CHECK(read_endpoint(file).rfind("tcp://0.0.0.0:", 0) == 0);
    if (env == &allowed) CHECK(contains(read_file(log), "listening in plaintext"));
    ::kill(pid, SIGTERM);
    CHECK(gt::test::wait_exit(pid, 20s) == 0);
  }

  // Bad key configurations exit 1 naming the variable and the file.
  const auto [bad_code, bad_out] = run_gt(
      dir, {"dispatcher", "--listen", "tcp://127.0.0.1:0"},
      {{"GT_CURVE_SECRET_KEY", keys.pub("dispatcher")}, {"GT_CURVE_AUTHORIZED_KEYS", keys.authorized}},
      20s);
  CHECK(bad_code == 1);
  CHECK_THAT(bad_out, Catch::Contains("GT_CURVE_SECRET_KEY=" + keys.pub("dispatcher")));
  const auto [alone_code, alone_out] = run_gt(
      dir, {"dispatcher", "--listen", "tcp://127.0.0.1:0"},
      {{"GT_CURVE_SECRET_KEY", keys.key("dispatcher")}}, 20s);
  CHECK(alone_code == 1);
  CHECK_THAT(alone_out, Catch::Contains("GT_CURVE_AUTHORIZED_KEYS is not"));
  CHECK(keys.no_secrets_in(bad_out + alone_out));
}

TEST_CASE("gt keygen writes a mode-0600 key file and a public key file",
          "[security][integration]") {
  TempDir dir;
  const std::string prefix = dir / "alice";
  const auto [code, out] = run_gt(dir, {"keygen", "--out", prefix});
  INFO(out);
  REQUIRE(code == 0);
  struct stat st {};
  REQUIRE(::stat((prefix + ".key").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  REQUIRE(::stat((prefix + ".pub").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0644);
  const gt::CurveKeyPair keys = gt::read_secret_key_file(prefix + ".key");
  CHECK(gt::read_public_key(prefix + ".pub") == keys.public_key);
  CHECK_THAT(out, Catch::Contains(keys.public_key) && !Catch::Contains(keys.secret_key));

  // An existing pair is kept unless --force.
  const auto [again, again_out] = run_gt(dir, {"keygen", "--out", prefix});
  CHECK(again == 1);
  CHECK_THAT(again_out, Catch::Contains(prefix + ".key") && Catch::Contains("--force"));
  CHECK(gt::read_secret_key_file(prefix + ".key").secret_key == keys.secret_key);
  CHECK(run_gt(dir, {"keygen", "--out", prefix, "--force"}).first == 0);
  CHECK(gt::read_secret_key_file(prefix + ".key").secret_key != keys.secret_key);

  // Without --out: the key file's text on stdout.
  const auto [print_code, printed] = run_gt(dir, {"keygen"});
  CHECK(print_code == 0);
  CHECK_NOTHROW(gt::parse_secret_key_file(printed, "stdout"));
  const auto [bad_code, bad_out] = run_gt(dir, {"keygen", "--out", dir / "none/x"});
  CHECK(bad_code == 1);
  CHECK_THAT(bad_out, Catch::Contains(dir / "none/x.key"));
}

TEST_CASE("gt launch with CURVE keys starts a cluster that authorized programs use",
          "[security][integration]") {
  gt::shutdown();
  Keys keys;
  TempDir dir;
  const std::string file = dir / "endpoint";
  const pid_t launch = spawn_gt({"launch", "--workers", "2", "--listen", "tcp://127.0.0.1:0",
                                 "--endpoint-file", file},
                                keys.cluster_env(), dir / "launch.log");
  const bool ready = wait_for_file(file, launch, 60s);
  INFO(read_file(dir / "launch.log"));
  REQUIRE(ready);
  {
    ClientEnv env(keys.pub("dispatcher"), keys.key("client"));
    gt::connect(read_endpoint(file));
    check_computes();
    CHECK(gt::debug::stats().workers.size() == 2);
    gt::shutdown();
  }
  ::kill(launch, SIGTERM);
  CHECK(gt::test::wait_exit(launch, 20s) == 0);
}

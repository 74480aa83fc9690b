// CurveZMQ support (common/security.h): key files, the plaintext rule, the
// ZAP handler and the handshake monitor, in one process over loopback.

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <mutex>

#include <spdlog/sinks/base_sink.h>
#include <spdlog/spdlog.h>

#include <gt/error.h>

#include "common/env.h"
#include "common/security.h"
#include "common/transport.h"
#include "tests/support/temp_dir.h"

namespace {

using namespace std::chrono_literals;
using gt::test::TempDir;

void write(const std::string& path, const std::string& text, mode_t mode = 0600) {
  std::ofstream(path, std::ios::trunc) << text;
  ::chmod(path.c_str(), mode);
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return st.st_mode & 07777;
}

// The message of the ConfigError `f` throws; fails the test when it throws
// nothing or something else.
template <typename F>
std::string config_error(F&& f) {
  try {
    f();
  } catch (const gt::ConfigError& e) {
    return e.what();
  } catch (const std::exception& e) {
    FAIL("expected gt::ConfigError, got: " << e.what());
  }
  FAIL("expected gt::ConfigError, got no exception");
  return {};
}

// Keeps what the ZAP handler's thread logs; text() reads it under the
// sink's lock.
class CaptureSink : public spdlog::sinks::base_sink<std::mutex> {
 public:
  std::string text() {
    std::lock_guard lock(mutex_);
    return text_;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    text_.append(msg.payload.data(), msg.payload.size());
    text_ += '\n';
  }
  void flush_() override {}

 private:
  std::string text_;
};

std::shared_ptr<spdlog::logger> capture_logger(const std::shared_ptr<CaptureSink>& sink) {
  auto log = std::make_shared<spdlog::logger>("zap-test", sink);
  log->set_level(spdlog::level::debug);
  return log;
}

}  // namespace

TEST_CASE("curve key files round trip through write, read and parse", "[security][unit]") {
  const gt::CurveKeyPair keys = gt::generate_curve_key_pair();
  CHECK(gt::is_z85_key(keys.public_key));
  CHECK(gt::is_z85_key(keys.secret_key));
  CHECK(keys.public_key != keys.secret_key);

  const gt::CurveKeyPair parsed = gt::parse_secret_key_file(gt::format_secret_key_file(keys), "x");
  CHECK(parsed.public_key == keys.public_key);
  CHECK(parsed.secret_key == keys.secret_key);
  CHECK(gt::parse_public_key_file(gt::format_public_key_file(keys.public_key, "alice"), "x") ==
        keys.public_key);

  TempDir dir;
  const auto [secret, pub] = gt::write_key_files(dir / "alice", keys, false);
  CHECK(secret == dir / "alice.key");
  CHECK(pub == dir / "alice.pub");
  CHECK(mode_of(secret) == 0600);
  CHECK(mode_of(pub) == 0644);
  CHECK(gt::read_secret_key_file(secret).secret_key == keys.secret_key);
  CHECK(gt::read_public_key(pub) == keys.public_key);
  CHECK(gt::read_public_key(keys.public_key) == keys.public_key);  // the key itself
  // The .pub line is an authorized keys line, name included.
  const auto listed = gt::read_authorized_keys(pub);
  REQUIRE(listed.size() == 1);
  CHECK(listed[0].key == keys.public_key);
  CHECK(listed[0].name == "alice");

  // An existing pair is never replaced unless asked.
  const gt::CurveKeyPair other = gt::generate_curve_key_pair();
  CHECK_THROWS_WITH(gt::write_key_files(dir / "alice", other, false),
                    Catch::Contains("already exists") && Catch::Contains("--force"));
  CHECK(gt::read_secret_key_file(secret).public_key == keys.public_key);
  gt::write_key_files(dir / "alice", other, true);
  CHECK(gt::read_secret_key_file(secret).public_key == other.public_key);
  CHECK(mode_of(secret) == 0600);
}

TEST_CASE("malformed secret key files are rejected with a message naming file and expectation",
          "[security][unit]") {
  const gt::CurveKeyPair keys = gt::generate_curve_key_pair();
  const gt::CurveKeyPair other = gt::generate_curve_key_pair();
  const std::string pub_line = "public-key = " + keys.public_key + "\n";
  const std::string sec_line = "secret-key = " + keys.secret_key + "\n";
  struct Case {
    const char* what;
    std::string text;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"empty", "", "no keys in the file"},
      {"comments only", "# nothing\n\n", "no keys in the file"},
      {"no secret key", pub_line, "no `secret-key = KEY` line"},
      {"no public key", sec_line, "no `public-key = KEY` line"},
      {"a public key file", keys.public_key + " alice\n", "is a public key line"},
      {"an unknown line", pub_line + "secret = " + keys.secret_key + "\n" + sec_line,
       "line 2 is neither"},
      {"a second secret key", pub_line + sec_line + sec_line, "line 3: a second `secret-key`"},
      {"a short secret key", pub_line + "secret-key = " + keys.secret_key.substr(1) + "\n",
       "line 2: the secret key is malformed: expected 40 Z85 characters, got 39"},
      {"a long public key", "public-key = " + keys.public_key + "x\n" + sec_line,
       "line 1: the public key is malformed: expected 40 Z85 characters, got 41"},
      {"a character outside Z85",
       pub_line + "secret-key = " + keys.secret_key.substr(0, 39) + "\"\n",
       "character 40 is outside the Z85 alphabet"},
      {"a pair that does not match", "public-key = " + other.public_key + "\n" + sec_line,
       "does not belong to the secret key"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    const std::string message = config_error(
        [&] { gt::parse_secret_key_file(c.text, "/keys/w.key", "GT_CURVE_CLIENT_KEY"); });
    CHECK_THAT(message, Catch::Contains("GT_CURVE_CLIENT_KEY=/keys/w.key") &&
                            Catch::Contains(c.message));
    CHECK_THAT(message, !Catch::Contains(keys.secret_key.substr(0, 20)));  // never quoted
  }

  TempDir dir;
  SECTION("a missing file") {
    const std::string message =
        config_error([&] { gt::read_secret_key_file(dir / "none.key", "GT_CURVE_SECRET_KEY"); });
    CHECK_THAT(message, Catch::Contains(dir / "none.key") && Catch::Contains("cannot open") &&
                            Catch::Contains("gt keygen"));
  }
  SECTION("a directory") {
    CHECK_THAT(config_error([&] { gt::read_secret_key_file(dir.path.string()); }),
               Catch::Contains("not a regular file"));
  }
  SECTION("a key file others may read") {
    write(dir / "open.key", gt::format_secret_key_file(keys), 0644);
    CHECK_THAT(config_error([&] { gt::read_secret_key_file(dir / "open.key", "X"); }),
               Catch::Contains("mode 0644") && Catch::Contains("chmod 600"));
  }
  SECTION("a huge file") {
    write(dir / "big.key", std::string(1 << 20, '#'));
    CHECK_THAT(config_error([&] { gt::read_secret_key_file(dir / "big.key"); }),
               Catch::Contains("more than"));
  }
}

TEST_CASE("public keys and authorized keys files parse and refuse malformed lines",
          "[security][unit]") {
  const gt::CurveKeyPair a = gt::generate_curve_key_pair();
  const gt::CurveKeyPair b = gt::generate_curve_key_pair();
  // No Z85 key starts with '#' (a group of 5 would exceed 32 bits), so
  // lines that do are comments, a commented-out key included.
  std::string commented = a.public_key;
  commented[0] = '#';
  CHECK_FALSE(gt::is_z85_key(commented));
  CHECK_FALSE(gt::is_z85_key(std::string(40, '#')));
  const std::string text = "# workers\n\n  " + a.public_key + "  worker-a\n" + b.public_key +
                           "\r\n" + commented + " disabled\n" + a.public_key +
                           " # alice again\n";
  const auto keys = gt::parse_authorized_keys(text, "auth");
  REQUIRE(keys.size() == 3);
  CHECK(keys[0].key == a.public_key);
  CHECK(keys[0].name == "worker-a");
  CHECK(keys[0].line == 3);
  CHECK(keys[1].key == b.public_key);
  CHECK(keys[1].name.empty());
  CHECK(keys[2].key == a.public_key);
  CHECK(keys[2].name == "alice again");
  CHECK(keys[2].line == 6);
  CHECK(gt::parse_authorized_keys("", "auth").empty());

  CHECK_THAT(config_error([&] {
               gt::parse_authorized_keys(a.public_key + "\nnot-a-key name\n", "/etc/auth",
                                         "GT_CURVE_AUTHORIZED_KEYS");
             }),
             Catch::Contains("GT_CURVE_AUTHORIZED_KEYS=/etc/auth") &&
                 Catch::Contains("line 2: `not-a-key` is not a public key") &&
                 Catch::Contains("40 Z85 characters"));
  CHECK_THAT(config_error([&] {
               gt::parse_authorized_keys(gt::format_secret_key_file(a), "auth");
             }),
             Catch::Contains("secret key file") && !Catch::Contains(a.secret_key));

  CHECK(gt::parse_public_key_file("# dispatcher\n" + a.public_key + " d\n", "p") == a.public_key);
  CHECK_THAT(config_error([&] { gt::parse_public_key_file("", "d.pub", "GT_CURVE_SERVER_KEY"); }),
             Catch::Contains("GT_CURVE_SERVER_KEY=d.pub") && Catch::Contains("no key"));
  CHECK_THAT(config_error([&] {
               gt::parse_public_key_file(a.public_key + "\n" + b.public_key + "\n", "d.pub");
             }),
             Catch::Contains("line 2 holds a second key"));
  CHECK_THAT(config_error([&] { gt::parse_public_key_file(gt::format_secret_key_file(a), "d"); }),
             Catch::Contains("this is a secret key file") && !Catch::Contains(a.secret_key));
  CHECK_THAT(config_error([&] { gt::parse_public_key_file("abc\n", "d.pub"); }),
             Catch::Contains("line 1: the first word is not a key"));
  // A value that is neither a key nor a file names the variable.
  CHECK_THAT(config_error([&] { gt::read_public_key("/nonexistent.pub", "GT_CURVE_SERVER_KEY"); }),
             Catch::Contains("GT_CURVE_SERVER_KEY=/nonexistent.pub") &&
                 Catch::Contains("or the Z85 key itself"));
}

TEST_CASE("curve keys from the environment need both variables of a side", "[security][unit]") {
  TempDir dir;
  const gt::CurveKeyPair server = gt::generate_curve_key_pair();
  const gt::CurveKeyPair client = gt::generate_curve_key_pair();
  gt::write_key_files(dir / "server", server, false);
  gt::write_key_files(dir / "client", client, false);
  write(dir / "auth", client.public_key + " client\n", 0644);

  gt::Env env;
  CHECK_FALSE(gt::curve_client_keys(env));
  CHECK_FALSE(gt::curve_server_keys(env));

  env.curve_server_key = dir / "server.pub";
  CHECK_THAT(config_error([&] { gt::curve_client_keys(env); }),
             Catch::Contains("GT_CURVE_CLIENT_KEY is not"));
  env.curve_client_key = dir / "client.key";
  auto c = gt::curve_client_keys(env);
  REQUIRE(c);
  CHECK(c->server_key == server.public_key);
  CHECK(c->own.public_key == client.public_key);
  env.curve_server_key.reset();
  CHECK_THAT(config_error([&] { gt::curve_client_keys(env); }),
             Catch::Contains("GT_CURVE_SERVER_KEY is not"));
  env.curve_server_key = server.public_key;  // the key itself
  CHECK(gt::curve_client_keys(env)->server_key == server.public_key);
  env.curve_client_key = dir / "client.pub";  // a public key where the pair belongs
  CHECK_THAT(config_error([&] { gt::curve_client_keys(env); }),
             Catch::Contains("GT_CURVE_CLIENT_KEY=") && Catch::Contains("public key line"));

  env.curve_secret_key = dir / "server.key";
  CHECK_THAT(config_error([&] { gt::curve_server_keys(env); }),
             Catch::Contains("GT_CURVE_AUTHORIZED_KEYS is not"));
  env.curve_authorized_keys = dir / "auth";
  auto s = gt::curve_server_keys(env);
  REQUIRE(s);
  CHECK(s->own.public_key == server.public_key);
  REQUIRE(s->authorized.size() == 1);
  CHECK(s->authorized[0].name == "client");
  env.curve_secret_key.reset();
  CHECK_THAT(config_error([&] { gt::curve_server_keys(env); }),
             Catch::Contains("GT_CURVE_SECRET_KEY is not"));

  // read_env picks the variables up.
  gt::ScopedEnv a("GT_CURVE_SERVER_KEY", "k");
  gt::ScopedEnv b("GT_ALLOW_PLAINTEXT", "1");
  const gt::Env e = gt::read_env();
  CHECK(e.curve_server_key == std::optional<std::string>("k"));
  CHECK(e.allow_plaintext);
}

TEST_CASE("plaintext endpoints are allowed on loopback only", "[security][unit]") {
  for (const char* local : {"tcp://127.0.0.1:5555", "tcp://127.1.2.3:0", "tcp://localhost:5555",
                            "tcp://[::1]:5555", "tcp://::1:5555", "ipc:///tmp/gt.sock",
                            "inproc://x"}) {
    INFO(local);
    CHECK(gt::is_local_endpoint(local));
    CHECK_FALSE(gt::check_plaintext_bind(local, false, false, "endpoint"));
  }
  for (const char* remote : {"tcp://0.0.0.0:0", "tcp://*:5555", "tcp://10.0.0.1:5555",
                             "tcp://128.0.0.1:1", "tcp://127.0.0:1", "tcp://127.0.0.256:1",
                             "tcp://eth0:5555", "tcp://[::]:5555", "tcp://example.com:1"}) {
    INFO(remote);
    CHECK_FALSE(gt::is_local_endpoint(remote));
    CHECK_THAT(config_error([&] { gt::check_plaintext_bind(remote, false, false, "endpoint"); }),
               Catch::Contains(remote) && Catch::Contains("GT_CURVE_SECRET_KEY") &&
                   Catch::Contains("GT_ALLOW_PLAINTEXT=1"));
    CHECK_FALSE(gt::check_plaintext_bind(remote, true, false, "endpoint"));  // CURVE: fine
    CHECK(gt::check_plaintext_bind(remote, false, true, "endpoint"));        // allowed: warn
  }
}

namespace {

// A ROUTER that is a CURVE server with a ZAP handler, as the dispatcher sets
// them up, echoing every message back.
struct CurveServer {
  explicit CurveServer(const gt::CurveServerKeys& keys, std::shared_ptr<spdlog::logger> log)
      : zap(context, keys, std::move(log)) {
    router.set(zmq::sockopt::linger, 0);
    gt::apply_curve(router, keys);
    router.bind("tcp://127.0.0.1:*");
    endpoint = router.get(zmq::sockopt::last_endpoint);
  }
  // Echoes what arrived within `wait`; the number of messages.
  int echo(std::chrono::milliseconds wait) {
    int n = 0;
    zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, wait) <= 0) return 0;
    while (auto frames = gt::recv_frames(router)) {
      gt::send_frames(router, *frames);
      ++n;
    }
    return n;
  }
  zmq::context_t context{1};
  gt::ZapHandler zap;  // before the socket: outlives it (Note [zap handler])
  zmq::socket_t router{context, zmq::socket_type::router};
  std::string endpoint;
};

// Connects a DEALER with `keys` (nullptr: plain), sends "hi" and serves the
// server until an echo arrives or the handshake is refused; the refusal.
std::optional<std::string> round_trip(CurveServer& server, const gt::CurveClientKeys* keys,
                                      bool* echoed = nullptr) {
  zmq::context_t context{1};
  zmq::socket_t dealer(context, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  gt::apply_curve(dealer, keys);
  gt::HandshakeMonitor monitor(context, dealer, keys != nullptr);
  dealer.connect(server.endpoint);
  (void)dealer.send(zmq::str_buffer("hi"), zmq::send_flags::dontwait);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    server.echo(10ms);
    if (auto frames = gt::recv_frames(dealer)) {
      if (echoed) *echoed = frames->size() == 1 && frames->front().to_string() == "hi";
      return std::nullopt;
    }
    if (auto f = monitor.failure()) return f;
  }
  return std::string("timed out");
}

}  // namespace

TEST_CASE("the ZAP handler lets listed keys in and refuses others, reloading its file",
          "[security][unit]") {
  TempDir dir;
  const gt::CurveKeyPair server_pair = gt::generate_curve_key_pair();
  const gt::CurveKeyPair alice = gt::generate_curve_key_pair();
  const gt::CurveKeyPair mallory = gt::generate_curve_key_pair();
  write(dir / "auth", "# test\n" + alice.public_key + " alice\n", 0644);
  gt::CurveServerKeys skeys{server_pair, dir / "auth", gt::read_authorized_keys(dir / "auth")};
  auto log_text = std::make_shared<CaptureSink>();
  CurveServer server(skeys, capture_logger(log_text));

  const gt::CurveClientKeys alice_keys{server_pair.public_key, alice};
  const gt::CurveClientKeys mallory_keys{server_pair.public_key, mallory};
  bool echoed = false;
  CHECK_FALSE(round_trip(server, &alice_keys, &echoed));
  CHECK(echoed);
  CHECK(server.zap.accepted() == 1);

  const auto refused = round_trip(server, &mallory_keys);
  REQUIRE(refused);
  CHECK_THAT(*refused, Catch::Contains("authentication failed") &&
                           Catch::Contains("GT_CURVE_AUTHORIZED_KEYS"));
  CHECK(server.zap.refused() >= 1);
  CHECK_THAT(log_text->text(), Catch::Contains("refused a connection from 127.0.0.1") &&
                                 Catch::Contains(mallory.public_key));
  CHECK_THAT(log_text->text(), !Catch::Contains(mallory.secret_key) &&
                                 !Catch::Contains(server_pair.secret_key));

  const auto plain = round_trip(server, nullptr);
  REQUIRE(plain);
  CHECK_THAT(*plain, Catch::Contains("requires CURVE") && Catch::Contains("GT_CURVE_SERVER_KEY"));

  // The file changes: mallory is listed now; a version that does not parse
  // keeps the list it replaces.
  write(dir / "auth", alice.public_key + "\n" + mallory.public_key + " mallory\n", 0644);
  std::this_thread::sleep_for(1100ms);  // the file is looked at once a second at most
  CHECK_FALSE(round_trip(server, &mallory_keys));
  write(dir / "auth", "garbage\n", 0644);
  std::this_thread::sleep_for(1100ms);
  CHECK_FALSE(round_trip(server, &alice_keys));
  CHECK_THAT(log_text->text(), Catch::Contains("keeping the 2 key(s) read before"));
}

TEST_CASE("the ZAP handler answers malformed requests and keeps serving", "[security][unit]") {
  TempDir dir;
  const gt::CurveKeyPair server_pair = gt::generate_curve_key_pair();
  const gt::CurveKeyPair alice = gt::generate_curve_key_pair();
  write(dir / "auth", alice.public_key + "\n", 0644);
  auto log_text = std::make_shared<CaptureSink>();
  CurveServer server({server_pair, dir / "auth", gt::read_authorized_keys(dir / "auth")},
                     capture_logger(log_text));
  // A local peer speaking to the handler directly, as libzmq would.
  zmq::socket_t req(server.context, zmq::socket_type::req);
  req.set(zmq::sockopt::linger, 0);
  req.set(zmq::sockopt::rcvtimeo, 2000);
  req.connect("inproc://zeromq.zap.01");
  auto ask = [&](std::vector<std::string> frames) {
    gt::Frames out;
    for (const auto& f : frames) out.emplace_back(f);
    REQUIRE(gt::send_frames(req, out));
    zmq::message_t m;
    std::vector<std::string> reply;
    do {
      REQUIRE(req.recv(m));
      reply.push_back(m.to_string());
    } while (m.more());
    return reply;
  };
  CHECK(ask({"1.0"}).at(2) == "500");
  CHECK(ask({"2.0", "7", "gt", "1.2.3.4", "", "CURVE", std::string(32, 'x')}).at(2) == "500");
  CHECK(ask({"1.0", "7", "gt", "1.2.3.4", "", "NULL"}).at(2) == "400");
  CHECK(ask({"1.0", "7", "gt", "1.2.3.4", "", "CURVE"}).at(2) == "400");
  const auto short_key = ask({"1.0", "8", "gt", "1.2.3.4", "", "CURVE", "abc"});
  CHECK(short_key.at(1) == "8");
  CHECK(short_key.at(2) == "400");
  CHECK(ask({"1.0", "9", "gt", "1.2.3.4", "", "PLAIN", "u", "p"}).at(2) == "400");
  const gt::CurveClientKeys alice_keys{server_pair.public_key, alice};
  CHECK_FALSE(round_trip(server, &alice_keys));  // still serving
}

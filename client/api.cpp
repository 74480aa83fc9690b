// The process-wide session: gt::init/connect/synchronize/shutdown/manual_seed.

#include "client/internal/api.h"

#include <bit>
#include <cstdlib>

#include <gt/error.h>
#include <gt/session.h>

#include "client/internal/ops.h"
#include "common/check.h"

namespace gt {
namespace client {
namespace {

// Leaked on purpose: the atexit handler may run after static destructors of
// this library would have, so the state must outlive them.
struct Global {
  std::mutex mutex;
  std::shared_ptr<Session> session;  // guarded by mutex
  bool atexit_registered = false;    // guarded by mutex
};

Global& global() {
  static Global* g = new Global;
  return *g;
}

bool open(const std::shared_ptr<Session>& s) { return s && !s->closed(); }

std::shared_ptr<Session> start_locked(Global& g, SessionOptions options) {
  g.session = Session::start(std::move(options));
  if (!g.atexit_registered) {
    std::atexit([] { gt::shutdown(); });
    g.atexit_registered = true;
  }
  return g.session;
}

}  // namespace

std::shared_ptr<Session> current_session() {
  Global& g = global();
  std::lock_guard lock(g.mutex);
  if (open(g.session)) return g.session;
  return start_locked(g, SessionOptions::from_env());
}

std::shared_ptr<Session> session_if_started() noexcept {
  Global& g = global();
  std::lock_guard lock(g.mutex);
  return open(g.session) ? g.session : nullptr;
}

std::shared_ptr<Session> connect(SessionOptions options) {
  Global& g = global();
  std::lock_guard lock(g.mutex);
  if (open(g.session)) {
    throw Error("[client.connect] a session with the dispatcher at " + g.session->endpoint() +
                " is already open; call gt::shutdown() first");
  }
  return start_locked(g, std::move(options));
}

}  // namespace client

void init() { client::current_session(); }

void connect(const std::string& endpoint) {
  client::Global& g = client::global();
  std::lock_guard lock(g.mutex);
  if (client::open(g.session)) {
    if (g.session->options().endpoint == endpoint) return;
    throw Error("[client.connect] cannot connect to " + endpoint +
                ": a session with the dispatcher at " + g.session->endpoint() +
                " is already open; call gt::shutdown() first");
  }
  client::SessionOptions options = client::SessionOptions::from_env();
  options.endpoint = endpoint;
  client::start_locked(g, std::move(options));
}

void synchronize() {
  if (auto s = client::session_if_started()) s->synchronize();
}

void shutdown() noexcept {
  std::shared_ptr<client::Session> s;
  try {
    client::Global& g = client::global();
    std::lock_guard lock(g.mutex);
    s = std::move(g.session);
  } catch (...) {
    return;
  }
  if (s) s->close();
}

void manual_seed(uint64_t seed) {
  const std::vector<int64_t> ints{std::bit_cast<int64_t>(seed)};
  client::infer_or_throw(op_info(OpCode::ManualSeed), OpCall{{}, ints, {}});
  wire::Instr in;
  in.op = OpCode::ManualSeed;
  in.ints = ints;
  client::current_session()->issue(std::move(in));
}

}  // namespace gt

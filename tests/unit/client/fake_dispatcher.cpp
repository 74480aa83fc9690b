#include "fake_dispatcher.h"

#include <cstring>

#include <gt/session.h>

#include "client/internal/api.h"
#include "common/config.h"
#include "common/shape.h"
#include "common/transport.h"

namespace gt::test {

FakeDispatcher::FakeDispatcher() : context_(1), router_(context_, zmq::socket_type::router) {
  router_.set(zmq::sockopt::linger, 0);
  router_.bind("tcp://127.0.0.1:*");
  endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  thread_ = std::thread([this] { run(); });
}

FakeDispatcher::~FakeDispatcher() {
  stop_ = true;
  thread_.join();
}

void FakeDispatcher::refuse_hello(wire::FailureInfo f) {
  std::lock_guard lock(mutex_);
  refuse_ = std::move(f);
}
void FakeDispatcher::ignore_hello() {
  std::lock_guard lock(mutex_);
  ignore_hello_ = true;
}
void FakeDispatcher::set_silent(bool silent) {
  std::lock_guard lock(mutex_);
  silent_ = silent;
}
void FakeDispatcher::fail_next_sync(std::vector<wire::FailureInfo> errors) {
  std::lock_guard lock(mutex_);
  next_sync_errors_ = std::move(errors);
}
void FakeDispatcher::error_next_sync(wire::FailureInfo f) {
  std::lock_guard lock(mutex_);
  next_sync_error_ = std::move(f);
}
void FakeDispatcher::poison(wire::TensorId id, wire::FailureInfo f) {
  std::lock_guard lock(mutex_);
  poisoned_[id] = std::move(f);
}
void FakeDispatcher::set_fetch_data(wire::TensorId id, FetchData data) {
  std::lock_guard lock(mutex_);
  data_[id] = std::move(data);
}
void FakeDispatcher::send_async_error(wire::FailureInfo f) {
  std::lock_guard lock(mutex_);
  outbox_.push_back(std::move(f));
}

void FakeDispatcher::set_stats(std::vector<wire::WorkerStatsInfo> workers) {
  std::lock_guard lock(mutex_);
  stats_ = std::move(workers);
}
std::vector<size_t> FakeDispatcher::stats_requests() const {
  std::lock_guard lock(mutex_);
  return stats_requests_;
}

std::optional<FakeDispatcher::HelloInfo> FakeDispatcher::hello() const {
  std::lock_guard lock(mutex_);
  return hello_;
}
std::vector<std::vector<wire::Instr>> FakeDispatcher::batches() const {
  std::lock_guard lock(mutex_);
  return batches_;
}
std::vector<wire::Instr> FakeDispatcher::instructions() const {
  std::lock_guard lock(mutex_);
  std::vector<wire::Instr> out;
  for (const auto& b : batches_) out.insert(out.end(), b.begin(), b.end());
  return out;
}
size_t FakeDispatcher::instruction_count_locked() const {
  size_t n = 0;
  for (const auto& b : batches_) n += b.size();
  return n;
}
int FakeDispatcher::heartbeats() const {
  std::lock_guard lock(mutex_);
  return heartbeats_;
}
bool FakeDispatcher::got_bye() const {
  std::lock_guard lock(mutex_);
  return bye_;
}

bool FakeDispatcher::wait_for(const std::function<bool()>& pred,
                              std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, timeout, pred);
}

void FakeDispatcher::run() {
  while (!stop_) {
    zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(5));
    {
      std::unique_lock lock(mutex_);
      if (client_identity_ && !outbox_.empty() && !silent_) {
        auto out = std::move(outbox_);
        outbox_.clear();
        for (const auto& f : out) send(*client_identity_, wire::encode_error_reply(kSession, 0, f));
      }
    }
    while (auto frames = recv_frames(router_)) {
      {
        std::lock_guard lock(mutex_);
        handle(*frames);
      }
      cv_.notify_all();
    }
  }
}

void FakeDispatcher::send(const zmq::message_t& identity, zmq::message_t header,
                          std::optional<zmq::message_t> data) {
  Frames frames;
  frames.emplace_back(identity.data(), identity.size());
  frames.push_back(std::move(header));
  if (data) frames.push_back(std::move(*data));
  send_frames(router_, frames);
}

// Called with mutex_ held.
void FakeDispatcher::handle(std::vector<zmq::message_t>& frames) {
  if (frames.size() < 2) return;
  const zmq::message_t& identity = frames[0];
  const wire::Message* msg = wire::decode(frames[1]);
  switch (msg->body_type()) {
    case wire::Body::Hello: {
      const auto* h = msg->body_as_Hello();
      hello_ = HelloInfo{h->role(), h->name() ? h->name()->str() : "", h->pid(),
                         h->min_workers(), h->version()};
      client_identity_.emplace(identity.data(), identity.size());
      if (ignore_hello_ || silent_) return;
      if (refuse_) {
        send(identity, wire::encode_error_reply(0, 0, *refuse_));
        return;
      }
      send(identity, wire::encode_welcome(kSession, -1, 1));
      return;
    }
    case wire::Body::Heartbeat:
      ++heartbeats_;
      if (!silent_) send(identity, wire::encode_heartbeat(kSession));
      return;
    case wire::Body::Bye:
      bye_ = true;
      return;
    case wire::Body::StatsRequest:
      stats_requests_.push_back(batches_.size());
      if (!silent_) {
        send(identity, wire::encode_stats_reply(
                           kSession, msg->body_as_StatsRequest()->request(), stats_));
      }
      return;
    case wire::Body::Batch: {
      std::vector<wire::Instr> instrs;
      if (const auto* v = msg->body_as_Batch()->instructions()) {
        for (const auto* in : *v) instrs.push_back(wire::to_instr(in));
      }
      batches_.push_back(instrs);
      for (const auto& in : instrs) process(in, frames, identity);
      return;
    }
    default:
      return;
  }
}

// Called with mutex_ held; frames = [identity, header, data frames...].
void FakeDispatcher::process(const wire::Instr& in, std::vector<zmq::message_t>& frames,
                             const zmq::message_t& identity) {
  switch (in.kind) {
    case wire::InstrKind::Op: {
      const OpInfo* info = find_op(static_cast<uint16_t>(in.op));
      if (!info) return;
      if (in.op == OpCode::FromData && in.payload >= 0 &&
          static_cast<size_t>(in.payload) + 2 < frames.size()) {
        const auto& f = frames[2 + in.payload];
        const auto* p = static_cast<const uint8_t*>(f.data());
        data_[in.outputs.at(0)] =
            FetchData{in.dtype, in.ints, std::vector<uint8_t>(p, p + f.size())};
      }
      std::vector<TensorMeta> inputs;
      for (auto id : in.inputs) {
        auto it = metas_.find(id);
        if (it == metas_.end()) return;
        inputs.push_back(it->second);
      }
      try {
        auto out = infer(*info, OpCall{inputs, in.ints, in.floats, in.dtype});
        for (size_t i = 0; i < out.size() && i < in.outputs.size(); ++i) {
          metas_[in.outputs[i]] = out[i];
        }
      } catch (const std::exception&) {
      }
      return;
    }
    case wire::InstrKind::Free:
      for (auto id : in.inputs) metas_.erase(id);
      return;
    case wire::InstrKind::Fetch: {
      if (silent_) return;
      const auto id = in.inputs.at(0);
      if (auto p = poisoned_.find(id); p != poisoned_.end()) {
        send(identity, wire::encode_error_reply(kSession, in.request, p->second));
        return;
      }
      FetchData d;
      if (auto it = data_.find(id); it != data_.end()) {
        d = it->second;
      } else if (auto m = metas_.find(id); m != metas_.end()) {
        d.dtype = m->second.dtype;
        d.shape = m->second.shape;
        d.bytes.assign(numel(d.shape) * element_size(d.dtype), 0);
      } else {
        send(identity, wire::encode_error_reply(
                           kSession, in.request,
                           wire::failure(Status::UnknownTensor, "[fake] unknown tensor", 0)));
        return;
      }
      zmq::message_t data(d.bytes.data(), d.bytes.size());
      send(identity, wire::encode_fetch_reply(kSession, in.request, id, d.dtype, d.shape),
           std::move(data));
      return;
    }
    case wire::InstrKind::Scope:
    case wire::InstrKind::Collective:
      return;
    case wire::InstrKind::Configure:
      // As dispatcher.cpp's on_sharded_batch: the refusal waits for the next Sync.
      try {
        const Config c = gt::detail::parse_config(in.name, "<session config>");
        gt::detail::validate_config(c, 1);
      } catch (const std::exception& e) {
        next_sync_errors_.push_back(wire::failure(
            Status::InvalidArgument, std::string("[dispatcher] config refused: ") + e.what()));
      }
      return;
    case wire::InstrKind::Sync: {
      if (silent_) return;
      if (next_sync_error_) {
        send(identity, wire::encode_error_reply(kSession, in.request, *next_sync_error_));
        next_sync_error_.reset();
        return;
      }
      send(identity, wire::encode_sync_reply(kSession, in.request, next_sync_errors_));
      next_sync_errors_.clear();
      return;
    }
  }
}

FakeSession::FakeSession() {
  using namespace std::chrono_literals;
  client::SessionOptions o;
  o.endpoint = fake.endpoint();
  o.heartbeat_interval = 50ms;
  o.heartbeat_timeout = 2000ms;
  o.connect_timeout = 2000ms;
  o.batch_max_delay = 10s;
  client::connect(o);
}

FakeSession::~FakeSession() { gt::shutdown(); }

std::vector<wire::Instr> FakeSession::ops() {
  gt::synchronize();
  std::vector<wire::Instr> out;
  for (auto& in : fake.instructions()) {
    if (in.kind == wire::InstrKind::Op) out.push_back(in);
  }
  return out;
}

}  // namespace gt::test

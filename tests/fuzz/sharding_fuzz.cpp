// Fuzz target: the dispatcher's handling of a sharded session's instructions
// (docs/fuzzing.md). A ShardedSession over a small cluster is fed client
// batches the way Dispatcher::State::on_sharded_batch feeds it (that loop
// lives with the dispatcher's sockets, so it is mirrored here): Fetch and
// Sync reach barrier() and plan_fetch(), Configure parses a config, the
// other kinds go to rewrite(). It must never crash, and may refuse an
// instruction only with RewriteError (anything else would drop the rest of
// the client's batch in serve_message). What it emits must be sendable:
// outputs only for workers the dispatcher has, payload indices within the
// worker's data frames, batches that encode and decode.
//
// Input (Note [fuzz programs] in tests/fuzz/program.h): [mode] [setup]
// records. setup: bit 0 a third worker, bit 1 GT_AUTO_SHARD, bits 2-3 the
// home worker (mod the cluster size), bits 4-7 the starting config
// (fuzz::kConfigs, or none past its end).

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <vector>

#include <gt/error.h>

#include "common/config.h"
#include "common/shape.h"
#include "dispatcher/sharding.h"
#include "tests/fuzz/program.h"

namespace {

using namespace gt;
using namespace gt::dispatcher;

// Instructions per input: enough for a few training steps' worth of ops,
// few enough that one input runs in milliseconds.
constexpr size_t kMaxInstrs = 512;
// Workers the dispatcher knows, alive or lost: indices below this are valid.
constexpr int kMaxWorkers = 4;

[[noreturn]] void fail(const std::string& what) {
  std::fprintf(stderr, "sharding_fuzz: %s\n", what.c_str());
  std::abort();
}

const std::vector<std::shared_ptr<const Config>>& configs() {
  static const auto all = [] {
    std::vector<std::shared_ptr<const Config>> out;
    for (std::string_view text : fuzz::kConfigs) {
      out.push_back(std::make_shared<const Config>(gt::detail::parse_config(text, "<fuzz>")));
    }
    return out;
  }();
  return all;
}

// GT_FUZZ_VERBOSE=1: what one input does (docs/fuzzing.md).
bool verbose() {
  static const bool on = std::getenv("GT_FUZZ_VERBOSE") != nullptr;
  return on;
}

struct Rig {
  std::unique_ptr<ShardedSession> session;
  ClusterView cluster;
  int known_workers = 0;  // the dispatcher's worker table, lost ones included
  uint64_t tag = 1;
  bool lost = false;  // a worker the session used was lost: the dispatcher stops rewriting

  void check_outputs(const Outputs& out) const {
    for (const auto& [w, o] : out) {
      if (w < 0 || w >= known_workers) {
        fail("instructions for worker " + std::to_string(w) +
             ", which the dispatcher does not have");
      }
      for (const wire::Instr& in : o.instrs) {
        if (in.payload >= 0 && static_cast<size_t>(in.payload) >= o.data.size()) {
          const OpInfo* op = find_op(static_cast<uint16_t>(in.op));
          fail(std::string("an instruction (") + wire::EnumNameInstrKind(in.kind) + " " +
               (op ? std::string(op->name) : "?") + ") for worker " + std::to_string(w) +
               " names payload " + std::to_string(in.payload) + " of " +
               std::to_string(o.data.size()) + " data frames");
        }
      }
      if (o.instrs.empty()) continue;
      zmq::message_t frame = wire::encode_batch(7, 1, o.instrs);
      try {
        (void)wire::decode(frame);
      } catch (const ProtocolError& e) {
        fail(std::string("a worker's batch does not decode: ") + e.what());
      }
    }
  }

  // Mirrors the dispatcher's fetch gathering (Note [fetch gathering]): the
  // shards it would fetch must join into the whole tensor.
  void plan_fetch(wire::TensorId id) const {
    FetchPlan plan;
    try {
      plan = session->plan_fetch(id);
    } catch (const RewriteError&) {
      return;
    }
    if (plan.parts.empty()) fail("a fetch plan without parts");
    for (const auto& p : plan.parts) {
      if (p.worker < 0 || p.worker >= known_workers) fail("a fetch from an unknown worker");
    }
    if (plan.parts.size() == 1) return;
    const int64_t element = element_size(plan.meta.dtype);
    const int64_t whole = checked_numel(plan.meta.shape) * element;
    if (whole > (int64_t{1} << 20)) return;  // joined for real only when small
    std::vector<std::vector<char>> bytes;
    std::vector<std::span<const char>> parts;
    std::vector<Shape> shapes;
    for (const auto& p : plan.parts) {
      if (plan.axis < 0 || plan.axis >= static_cast<int>(p.shape.size()))
        fail("a gather axis out of range");
      bytes.emplace_back(static_cast<size_t>(checked_numel(p.shape) * element));
      shapes.push_back(p.shape);
    }
    for (const auto& b : bytes) parts.emplace_back(b.data(), b.size());
    if (concat_rows(parts, shapes, plan.axis, element).size() != static_cast<size_t>(whole)) {
      fail("the shards of a fetch do not join into the whole tensor");
    }
  }

  // One client instruction, as on_sharded_batch handles it.
  void handle(const wire::Instruction& in, std::span<const Payload> payloads, Outputs& out) {
    if (verbose()) {
      const OpInfo* op = find_op(in.op());
      std::fprintf(stderr, "%s %s: %zu inputs, %zu outputs, %zu ints\n",
                   wire::EnumNameInstrKind(in.kind()), op ? std::string(op->name).c_str() : "?",
                   wire::view(in.inputs()).size(), wire::view(in.outputs()).size(),
                   wire::view(in.ints()).size());
    }
    switch (in.kind()) {
      case wire::InstrKind::Fetch: {
        const auto ids = wire::view(in.inputs());
        session->barrier(out, ids.empty() ? std::nullopt : std::optional<wire::TensorId>(ids[0]));
        if (!ids.empty()) plan_fetch(ids[0]);
        return;
      }
      case wire::InstrKind::Sync:
        session->barrier(out);
        return;
      case wire::InstrKind::Configure: {
        const std::string text = in.name() ? in.name()->str() : "";
        if (text.size() > wire::kMaxConfigText) return;
        try {
          auto c = std::make_shared<Config>(gt::detail::parse_config(text, "<session config>"));
          gt::detail::validate_config(*c, known_workers);
          session->set_config(std::move(c));
        } catch (const std::exception&) {
          // Refused for the next Sync, as the dispatcher does (config_fuzz
          // holds the parser to ConfigError).
        }
        return;
      }
      default:
        break;
    }
    try {
      session->rewrite(in, payloads, cluster, out);
    } catch (const RewriteError& e) {
      if (e.message.empty()) fail("a refusal without a message");
      if (verbose()) std::fprintf(stderr, "refused: %s\n", e.message.c_str());
    }
  }

  // A worker is lost (arg odd) or a new one joins (arg even), as lose_worker
  // and on_hello change the cluster between batches. The home worker never
  // goes: a session whose home is lost stops at once.
  void event(uint8_t arg) {
    if (arg & 1) {
      const int w = cluster.workers[(arg >> 1) % cluster.workers.size()];
      if (w == session->home()) return;
      const auto& used = session->used_workers();
      if (std::binary_search(used.begin(), used.end(), w)) lost = true;
      std::erase(cluster.workers, w);
    } else if (known_workers < kMaxWorkers) {
      cluster.workers.push_back(known_workers++);
    }
  }

  void run_batch(const wire::Message& msg, std::span<zmq::message_t> data) {
    const auto* batch = msg.body_as_Batch();
    if (!batch || !batch->instructions()) return;
    std::vector<Payload> payloads;
    for (auto& d : data) payloads.push_back(std::make_shared<zmq::message_t>(std::move(d)));
    Outputs out;
    for (const wire::Instruction* in : *batch->instructions()) handle(*in, payloads, out);
    check_outputs(out);
    if (verbose()) {
      for (const auto& [w, o] : out) {
        std::fprintf(stderr, "worker %d: %zu instructions, %zu data frames\n", w, o.instrs.size(),
                     o.data.size());
      }
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::Bytes in(data, size);
  const uint8_t mode = in.u8();
  const uint8_t setup = in.u8();
  Rig rig;
  rig.known_workers = 2 + (setup & 1);
  for (int w = 0; w < rig.known_workers; ++w) rig.cluster.workers.push_back(w);
  rig.cluster.auto_shard = setup & 2;
  rig.cluster.auto_shard_min_bytes = 64;  // small tensors split too, so small inputs reach it
  rig.cluster.next_tag = &rig.tag;
  const int home = ((setup >> 2) & 3) % rig.known_workers;
  const size_t config = (setup >> 4) % (configs().size() + 1);
  rig.session = std::make_unique<ShardedSession>(
      home, config < configs().size() ? configs()[config] : nullptr);

  if (mode & 1) {
    // Raw messages: whatever verifies is a client batch.
    while (!in.empty() && !rig.lost) {
      auto frames = fuzz::read_raw_message(in);
      Frames msg;
      for (const auto& f : frames) msg.emplace_back(f.data(), f.size());
      const wire::Message* m = nullptr;
      try {
        m = wire::decode(msg[0]);
      } catch (const ProtocolError&) {
        continue;
      }
      rig.run_batch(*m, std::span(msg).subspan(1));
    }
    return 0;
  }
  for (fuzz::Batch& b : fuzz::read_program(in, kMaxInstrs)) {
    if (rig.lost) break;
    if (b.event) {
      rig.event(b.event_arg);
      continue;
    }
    if (b.instrs.empty()) continue;
    Frames msg;
    msg.push_back(wire::encode_batch(0, 1, b.instrs));
    for (const auto& f : b.frames) msg.emplace_back(f.data(), f.size());
    const wire::Message* m = wire::decode(msg[0]);
    rig.run_batch(*m, std::span(msg).subspan(1));
  }
  return 0;
}

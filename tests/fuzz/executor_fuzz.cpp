// Fuzz target: the worker's instruction handling (docs/fuzzing.md). A CPU
// Executor, built as the worker tests build one, runs messages made from the
// fuzz input through handle_message, the entry the worker's IO thread uses.
// It must never crash and never throw: every bad instruction is a failure
// value for the next Sync. Collectives reach their checks and then fail
// (no communicators); the JIT is off (its compiler is a separate process).
//
// Input (Note [fuzz programs] in tests/fuzz/program.h): [mode] [setup]
// records, or raw messages. Memory is bounded twice: the executor's own
// capacity_bytes refuses any result over kCapacityBytes, and the input stops
// once its live tensors pass kMaxLiveBytes.

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <spdlog/spdlog.h>

#include "common/wire.h"
#include "tests/fuzz/program.h"
#include "worker/executor.h"

namespace {

using namespace gt;

constexpr uint64_t kCapacityBytes = uint64_t{1} << 20;
constexpr uint64_t kMaxLiveBytes = uint64_t{64} << 20;
constexpr size_t kMaxInstrs = 512;

std::shared_ptr<spdlog::logger> quiet_logger() {
  // Failures are the expected outcome of most inputs: keep them out of the
  // fuzzer's output.
  auto log = std::make_shared<spdlog::logger>("worker-fuzz");
  log->set_level(spdlog::level::off);
  return log;
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "executor_fuzz: %s\n", what);
  std::abort();
}

// Replies outlive the executor, as a fetch's frame may in the worker (ZeroMQ
// still sending it): their data must stay readable (Note [fetch buffers]).
volatile uint64_t g_sink;

void read_replies(const std::vector<Frames>& replies) {
  for (const Frames& r : replies) {
    for (const zmq::message_t& f : r) {
      const auto* p = static_cast<const unsigned char*>(f.data());
      for (size_t i = 0; i < f.size(); ++i) g_sink = g_sink + p[i];
    }
  }
}

// GT_FUZZ_VERBOSE=1: what one input does (docs/fuzzing.md).
bool verbose() {
  static const bool on = std::getenv("GT_FUZZ_VERBOSE") != nullptr;
  return on;
}

void print_reply(const wire::Message& m) {
  std::fprintf(stderr, "reply %s\n", std::string(wire::body_name(m.body_type())).c_str());
  if (const auto* r = m.body_as_SyncReply(); r && r->errors()) {
    for (const wire::Failure* f : *r->errors()) {
      std::fprintf(stderr, "  %s\n", wire::to_failure_info(f).message.c_str());
    }
  }
  if (const auto* r = m.body_as_ErrorReply()) {
    std::fprintf(stderr, "  %s\n", wire::to_failure_info(r->error()).message.c_str());
  }
}

void print_ids(const char* what, const auto& v) {
  std::fprintf(stderr, " %s[", what);
  for (const auto& x : v) std::fprintf(stderr, " %lld", static_cast<long long>(x));
  std::fprintf(stderr, " ]");
}

void print_batch(const fuzz::Batch& b) {
  std::fprintf(stderr, "batch session=%llu frames=%zu\n",
               static_cast<unsigned long long>(b.session), b.frames.size());
  for (const wire::Instr& in : b.instrs) {
    const OpInfo* op = find_op(static_cast<uint16_t>(in.op));
    std::fprintf(stderr, "  %s %s", wire::EnumNameInstrKind(in.kind),
                 in.kind == wire::InstrKind::Op && op ? std::string(op->name).c_str() : "");
    print_ids("in", in.inputs);
    print_ids("out", in.outputs);
    print_ids("ints", in.ints);
    print_ids("floats", in.floats);
    std::fprintf(stderr, " dtype=%d payload=%d\n", static_cast<int>(in.dtype), in.payload);
  }
}

void run_message(worker::Executor& ex, Frames& frames, std::vector<Frames>& replies) {
  const worker::ReplySink sink = [&](Frames&& reply) {
    // Replies go back over the wire: each must be a valid message. (The
    // executor would log and swallow an exception from here.)
    if (reply.empty()) fail("an empty reply");
    const wire::Message* m = nullptr;
    try {
      m = wire::decode(reply[0]);
    } catch (const std::exception&) {
      fail("a reply that does not decode");
    }
    if (verbose()) print_reply(*m);
    replies.push_back(std::move(reply));
  };
  try {
    ex.handle_message(frames, sink);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "executor_fuzz: handle_message threw: %s\n", e.what());
    fail("the executor threw");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool init = [] {
    // One thread: kernels stay deterministic, and the fuzzer shares a small
    // machine.
    at::set_num_threads(1);
    return true;
  }();
  (void)init;
  fuzz::Bytes in(data, size);
  const uint8_t mode = in.u8();
  (void)in.u8();  // setup: unused here
  worker::ExecutorOptions options;
  options.worker = 0;
  options.device = at::kCPU;
  options.capacity_bytes = kCapacityBytes;
  options.logger = quiet_logger();
  std::vector<Frames> replies;
  {
    worker::Executor ex(std::move(options));
    if (mode & 1) {
      while (!in.empty() && ex.tensor_bytes() < kMaxLiveBytes) {
        Frames frames;
        for (const auto& f : fuzz::read_raw_message(in)) frames.emplace_back(f.data(), f.size());
        run_message(ex, frames, replies);
      }
    } else {
      uint64_t seq = 0;
      for (fuzz::Batch& b : fuzz::read_program(in, kMaxInstrs)) {
        if (ex.tensor_bytes() >= kMaxLiveBytes) break;
        Frames frames;
        if (b.event) {
          frames.push_back(wire::encode_bye(1 + b.event_arg % 3));
        } else {
          if (b.instrs.empty()) continue;
          if (verbose()) print_batch(b);
          frames.push_back(wire::encode_batch(b.session, ++seq, b.instrs));
          for (const auto& f : b.frames) frames.emplace_back(f.data(), f.size());
        }
        run_message(ex, frames, replies);
      }
    }
  }
  read_replies(replies);
  return 0;
}

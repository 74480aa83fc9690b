// Fuzz target: the wire decoder (docs/fuzzing.md). Any bytes as a header
// frame go through wire::decode; a message it accepts is read the way the
// dispatcher, the worker and the client read theirs (every field, every
// vector element, to_instr / to_failure_info / to_worker_stats) and must
// never crash or read outside the frame. A decoded batch re-encodes to the
// same instructions.
//
// Input: [align] [frame bytes]. align & 1 places the frame at an odd address
// in a zero-copy message, as ZeroMQ may deliver it, so decode's aligned copy
// runs too.

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <gt/error.h>

#include "common/wire.h"

namespace {

using namespace gt;

// Reads bytes so the sanitizers see every access; the sum goes nowhere.
volatile uint64_t g_sink;

void touch(std::string_view s) {
  uint64_t h = 0;
  for (char c : s) h += static_cast<unsigned char>(c);
  g_sink = g_sink + h;
}
void touch(const flatbuffers::String* s) {
  if (s) touch(s->string_view());
}
[[noreturn]] void fail(const char* what);

template <typename T>
void touch(const flatbuffers::Vector<T>* v) {
  // Note [vector alignment] in common/wire.cpp: decode refuses these, so the
  // spans below are well defined (checked here, as a plain build's replay
  // has no UBSan to notice).
  if (v && reinterpret_cast<uintptr_t>(v->data()) % alignof(T) != 0) {
    fail("decode accepted a vector whose elements are misaligned");
  }
  for (const T& x : wire::view(v)) g_sink = g_sink + static_cast<uint64_t>(x);
}
void touch(const flatbuffers::Vector<flatbuffers::Offset<flatbuffers::String>>* v) {
  if (!v) return;
  for (const auto* s : *v) touch(s);
}

[[noreturn]] void fail(const char* what) {
  std::fprintf(stderr, "wire_fuzz: %s\n", what);
  std::abort();
}

// Decoding what encode_batch wrote gives the same instructions back.
void check_batch_round_trip(const std::vector<wire::Instr>& instrs) {
  zmq::message_t frame = wire::encode_batch(1, 2, instrs);
  const wire::Message* again = wire::decode(frame);
  const auto* b = again->body_as_Batch();
  if (!b) fail("a re-encoded batch decodes to another body");
  const size_t n = b->instructions() ? b->instructions()->size() : 0;
  if (n != instrs.size()) fail("a re-encoded batch has another instruction count");
  for (size_t i = 0; i < n; ++i) {
    const wire::Instr x = wire::to_instr(b->instructions()->Get(i));
    const wire::Instr& y = instrs[i];
    // Floats compare by bits: NaNs round-trip too.
    const auto bits = [](double d) { return std::bit_cast<uint64_t>(d); };
    if (x.kind != y.kind || x.op != y.op || x.outputs != y.outputs || x.inputs != y.inputs ||
        x.ints != y.ints || x.dtype != y.dtype || x.payload != y.payload ||
        x.request != y.request || x.name != y.name ||
        !std::ranges::equal(x.floats, y.floats, {}, bits, bits)) {
      fail("a re-encoded instruction differs from the decoded one");
    }
  }
}

void walk(const wire::Message& m) {
  touch(wire::body_name(m.body_type()));
  g_sink = g_sink + wire::reply_request(m) + m.session();
  switch (m.body_type()) {
    case wire::Body::Hello: {
      const auto* h = m.body_as_Hello();
      g_sink = g_sink + h->version() + static_cast<uint64_t>(h->role()) + h->capacity_bytes() +
               static_cast<uint64_t>(h->pid()) + h->min_workers();
      touch(h->device());
      touch(h->name());
      touch(wire::EnumNameRole(h->role()));
      break;
    }
    case wire::Body::Welcome: {
      const auto* w = m.body_as_Welcome();
      g_sink =
          g_sink + w->version() + w->session() + static_cast<uint64_t>(w->worker()) + w->workers();
      touch(w->events());
      break;
    }
    case wire::Body::Batch: {
      const auto* b = m.body_as_Batch();
      g_sink = g_sink + b->seq();
      std::vector<wire::Instr> instrs;
      if (b->instructions()) {
        for (const wire::Instruction* in : *b->instructions()) {
          // The worker skips null entries; verified vectors of tables have none.
          if (!in) continue;
          touch(in->outputs());
          touch(in->inputs());
          touch(in->ints());
          for (double f : wire::view(in->floats())) g_sink = g_sink + static_cast<uint64_t>(f != 0);
          touch(in->name());
          touch(wire::EnumNameInstrKind(in->kind()));
          if (const OpInfo* op = find_op(in->op())) touch(op->name);
          instrs.push_back(wire::to_instr(in));
        }
      }
      check_batch_round_trip(instrs);
      break;
    }
    case wire::Body::FetchReply: {
      const auto* r = m.body_as_FetchReply();
      g_sink = g_sink + r->tensor() + r->dtype();
      touch(r->shape());
      break;
    }
    case wire::Body::SyncReply: {
      const auto* r = m.body_as_SyncReply();
      if (r->errors()) {
        for (const wire::Failure* f : *r->errors()) touch(wire::to_failure_info(f).message);
      }
      break;
    }
    case wire::Body::ErrorReply: {
      const wire::FailureInfo f = wire::to_failure_info(m.body_as_ErrorReply()->error());
      touch(f.message);
      touch(f.op);
      // The client turns a failure into its exception.
      try {
        wire::throw_failure(f);
      } catch (const gt::Error& e) {
        touch(e.what());
      }
      break;
    }
    case wire::Body::StatsReply: {
      const auto* r = m.body_as_StatsReply();
      if (r->workers()) {
        for (const wire::WorkerStats* w : *r->workers()) touch(wire::to_worker_stats(w).device);
      }
      break;
    }
    case wire::Body::TraceControl: {
      const auto* t = m.body_as_TraceControl();
      g_sink = g_sink + t->events() + t->stats();
      break;
    }
    case wire::Body::TraceEvents: {
      const auto* t = m.body_as_TraceEvents();
      touch(t->events());
      touch(t->stats());
      break;
    }
    case wire::Body::StoreSet: {
      const auto* s = m.body_as_StoreSet();
      touch(s->key());
      touch(s->value());
      break;
    }
    case wire::Body::StoreGet: {
      const auto* g = m.body_as_StoreGet();
      touch(g->keys());
      g_sink = g_sink + g->timeout_ms();
      break;
    }
    case wire::Body::StoreReply: {
      const auto* r = m.body_as_StoreReply();
      if (r->entries()) {
        for (const wire::StoreEntry* e : *r->entries()) {
          touch(e->key());
          touch(e->value());
        }
      }
      touch(r->missing());
      break;
    }
    default:
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const bool misaligned = data[0] & 1;
  const size_t n = size - 1;
  // A buffer of our own, so the frame's address (aligned or not) is ours to pick.
  std::vector<uint64_t> storage(n / 8 + 2);
  char* base = reinterpret_cast<char*>(storage.data()) + (misaligned ? 1 : 0);
  if (n > 0) std::memcpy(base, data + 1, n);
  zmq::message_t frame(
      base, n, [](void*, void*) {}, nullptr);
  const wire::Message* msg = nullptr;
  try {
    msg = wire::decode(frame);
  } catch (const ProtocolError&) {
    return 0;  // refused: what every component does with it
  }
  walk(*msg);
  // The dispatcher stamps the session into a client batch in place.
  if (msg->body_type() == wire::Body::Batch) {
    wire::GetMutableMessage(frame.data())->mutate_session(42);
  }
  return 0;
}

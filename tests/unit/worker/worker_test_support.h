#pragma once
// Drives a worker::Executor in-process: builds batches with the wire codec,
// collects replies, and reads them back.

#include <cstring>
#include <memory>
#include <vector>

// LibTorch before Catch: Debian's LibTorch pulls in glog, whose CHECK macro
// would otherwise silently replace Catch's CHECK (both are system headers, so
// the redefinition does not even warn).
#include <ATen/ATen.h>
#include <catch2/catch.hpp>
#include <spdlog/spdlog.h>

#include "common/wire.h"
#include "worker/executor.h"
#include "worker/kernels.h"

namespace gt::worker::test {

using wire::Instr;
using wire::InstrKind;
using wire::TensorId;

/// A logger without sinks: failures the tests provoke stay out of the output.
inline std::shared_ptr<spdlog::logger> quiet_logger() {
  auto log = std::make_shared<spdlog::logger>("worker-test");
  log->set_level(spdlog::level::off);
  return log;
}

inline Instr op(OpCode code, std::vector<TensorId> outputs, std::vector<TensorId> inputs,
                std::vector<int64_t> ints = {}, std::vector<double> floats = {},
                DType dtype = DType::Float32) {
  Instr in;
  in.kind = InstrKind::Op;
  in.op = code;
  in.outputs = std::move(outputs);
  in.inputs = std::move(inputs);
  in.ints = std::move(ints);
  in.floats = std::move(floats);
  in.dtype = dtype;
  return in;
}

inline Instr fetch(TensorId id, uint64_t request) {
  Instr in;
  in.kind = InstrKind::Fetch;
  in.inputs = {id};
  in.request = request;
  return in;
}

inline Instr sync_instr(uint64_t request) {
  Instr in;
  in.kind = InstrKind::Sync;
  in.request = request;
  return in;
}

inline Instr free_instr(std::vector<TensorId> ids) {
  Instr in;
  in.kind = InstrKind::Free;
  in.inputs = std::move(ids);
  return in;
}

inline zmq::message_t bytes_of(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return zmq::message_t(c.data_ptr(), c.numel() * c.element_size());
}

struct Harness {
  explicit Harness(ExecutorOptions options = {0, at::kCPU, 0, quiet_logger(), nullptr, nullptr})
      : ex(std::move(options)) {}

  Executor ex;
  uint64_t session = 7;
  uint64_t seq = 0;
  TensorId next_id = 1000;
  std::vector<Frames> replies;
  ReplySink sink = [this](Frames&& f) { replies.push_back(std::move(f)); };

  void run(const std::vector<Instr>& instrs, Frames data = {}) {
    Frames frames;
    frames.push_back(wire::encode_batch(session, ++seq, instrs));
    for (auto& d : data) frames.push_back(std::move(d));
    REQUIRE_NOTHROW(ex.handle_message(frames, sink));
  }

  void run1(Instr in, Frames data = {}) { run({std::move(in)}, std::move(data)); }

  /// Uploads a tensor with FromData; returns its id.
  TensorId put(const at::Tensor& t) {
    const TensorId id = next_id++;
    const auto sizes = t.sizes();
    Instr in = op(OpCode::FromData, {id}, {}, std::vector<int64_t>(sizes.begin(), sizes.end()), {},
                  *to_dtype(t.scalar_type()));
    in.payload = 0;
    Frames data;
    data.push_back(bytes_of(t));
    run1(std::move(in), std::move(data));
    return id;
  }

  at::Tensor get(TensorId id) {
    auto t = ex.tensor(session, id);
    REQUIRE(t.has_value());
    return *t;
  }

  const wire::Message* reply(size_t i) {
    REQUIRE(i < replies.size());
    return wire::decode(replies[i][0]);
  }

  /// Runs a Sync and returns the failures it reports.
  std::vector<wire::FailureInfo> sync() {
    const size_t before = replies.size();
    run1(sync_instr(99));
    REQUIRE(replies.size() == before + 1);
    const auto* r = reply(before)->body_as_SyncReply();
    REQUIRE(r != nullptr);
    CHECK(r->request() == 99);
    std::vector<wire::FailureInfo> out;
    if (r->errors()) {
      for (const auto* f : *r->errors()) out.push_back(wire::to_failure_info(f));
    }
    return out;
  }
};

/// Same dtype, same shape, values equal within a tolerance (exactly for
/// integral and bool tensors).
inline void check_same(const at::Tensor& got, const at::Tensor& want) {
  INFO("got " << got.sizes() << " " << got.scalar_type() << ", want " << want.sizes() << " "
              << want.scalar_type());
  REQUIRE(got.scalar_type() == want.scalar_type());
  REQUIRE(got.sizes() == want.sizes());
  if (at::isFloatingType(want.scalar_type())) {
    CHECK(at::allclose(got.to(at::kDouble), want.to(at::kDouble), 1e-5, 1e-6, true));
  } else {
    CHECK(at::equal(got, want));
  }
}

}  // namespace gt::worker::test

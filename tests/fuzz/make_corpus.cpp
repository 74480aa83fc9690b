// Writes the seed inputs of every fuzz target (docs/fuzzing.md): real
// messages from the wire encoders, programs in the format of Note [fuzz
// programs] that a client would send (a data-parallel step, tensor and
// pipeline parallel layers, every op family), the example configs and
// instruction-log lines. Seeds are named seed-* (seed-regress-*: a bug the
// fuzzers found, written again as a readable program); the inputs the
// fuzzers saved for those bugs are committed beside them as crash-* and
// never rewritten here.
//
//   gt_fuzz_make_corpus SOURCE_DIR OUT_DIR   (OUT_DIR: tests/fuzz/corpus)

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <string>
#include <vector>

#include "common/instruction_log.h"
#include "common/wire.h"
#include "tests/fuzz/program.h"

namespace {

using namespace gt;
using fuzz::ProgramWriter;
using wire::Instr;
using wire::InstrKind;
using wire::ScopeAction;

namespace fs = std::filesystem;

struct Corpus {
  fs::path root;
  size_t files = 0;

  void write(const std::string& target, const std::string& name, const void* data, size_t size) {
    const fs::path dir = root / target;
    fs::create_directories(dir);
    std::ofstream out(dir / ("seed-" + name), std::ios::binary);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    ++files;
  }
  void write(const std::string& target, const std::string& name, const std::vector<uint8_t>& b) {
    write(target, name, b.data(), b.size());
  }
  void write(const std::string& target, const std::string& name, std::string_view s) {
    write(target, name, s.data(), s.size());
  }
};

// ---- wire: real messages ---------------------------------------------------

Instr op(OpCode code, std::vector<wire::TensorId> out, std::vector<wire::TensorId> in,
         std::vector<int64_t> ints = {}, std::vector<double> floats = {}) {
  Instr i;
  i.op = code;
  i.outputs = std::move(out);
  i.inputs = std::move(in);
  i.ints = std::move(ints);
  i.floats = std::move(floats);
  return i;
}

Instr special(InstrKind kind, std::vector<wire::TensorId> in, uint64_t request = 0,
              std::string name = {}, std::vector<int64_t> ints = {}) {
  Instr i;
  i.kind = kind;
  i.inputs = std::move(in);
  i.request = request;
  i.name = std::move(name);
  i.ints = std::move(ints);
  return i;
}

std::vector<Instr> training_batch() {
  Instr upload = op(OpCode::FromData, {1}, {}, {2, 3});
  upload.payload = 0;
  return {upload,
          op(OpCode::Randn, {2}, {}, {3, 4}),
          special(InstrKind::Scope, {}, 0, "batch", {0}),
          op(OpCode::Matmul, {3}, {1, 2}),
          op(OpCode::Relu, {4}, {3}),
          op(OpCode::Sum, {5}, {4}, {0}),
          special(InstrKind::Scope, {}, 0, "", {2}),
          op(OpCode::MulScalarInplace, {}, {2}, {}, {0.5}),
          special(InstrKind::Free, {3, 4}),
          special(InstrKind::Fetch, {5}, 11),
          special(InstrKind::Sync, {}, 12),
          special(InstrKind::Configure, {}, 0, std::string(fuzz::kConfigs[0]))};
}

std::vector<char> bytes_of(const zmq::message_t& m) {
  const auto* p = static_cast<const char*>(m.data());
  return std::vector<char>(p, p + m.size());
}

void wire_seeds(Corpus& c) {
  std::map<std::string, zmq::message_t> msgs;
  msgs["hello-client"] = wire::encode_hello(wire::Role::Client, "", 0, 1234, "train", 2);
  msgs["hello-worker"] = wire::encode_hello(wire::Role::Worker, "cuda:0", 1 << 30, 99, "w0", 1);
  msgs["hello-old-version"] = wire::encode_hello(wire::Role::Monitor, "", 0, 1, "gt top", 1, 5);
  msgs["welcome"] = wire::encode_welcome(3, -1, 2, "tcp://127.0.0.1:5556");
  msgs["batch"] = wire::encode_batch(3, 17, training_batch());
  Instr coll;
  coll.kind = InstrKind::Collective;
  coll.op = static_cast<OpCode>(1);
  coll.ints = {2, 0, 1, 0, 0, 4, 3};
  coll.inputs = {7};
  msgs["batch-collective"] = wire::encode_batch(3, 18, std::vector<Instr>{coll});
  msgs["batch-empty"] = wire::encode_batch(0, 0, {});
  const int64_t shape[] = {2, 3};
  msgs["fetch-reply"] = wire::encode_fetch_reply(3, 11, 5, DType::Float32, shape);
  const wire::FailureInfo failures[] = {
      wire::failure(Status::UnknownTensor, "[worker 0] add failed: tensor 9 is not live", 0, "add",
                    9),
      wire::failure(Status::InvalidArgument, "[dispatcher] config refused")};
  msgs["sync-reply"] = wire::encode_sync_reply(3, 12, failures);
  msgs["error-reply"] = wire::encode_error_reply(3, 11, failures[0]);
  msgs["heartbeat"] = wire::encode_heartbeat(3);
  msgs["bye"] = wire::encode_bye(3);
  msgs["stats-request"] = wire::encode_stats_request(3, 13);
  wire::WorkerStatsInfo stats;
  stats.worker = 1;
  stats.device = "cpu";
  stats.instructions = 1000;
  stats.jit_enabled = true;
  stats.jit_runs = 7;
  msgs["stats-reply"] = wire::encode_stats_reply(3, 13, std::span(&stats, 1));
  msgs["trace-control"] = wire::encode_trace_control(true, false);
  msgs["trace-events"] = wire::encode_trace_events(
      "{\"elapsed_s\":1.5,\"seq\":1,\"event\":\"EXEC\",\"component\":\"WORKER 0\",\"kind\":\"Op\","
      "\"op\":\"add\",\"details\":\"\"}\n",
      "");
  const char value[] = "tcp://127.0.0.1:4000";
  msgs["store-set"] =
      wire::encode_store_set("gt/comm/0,1/rank0", std::span(value, sizeof value - 1));
  const std::vector<std::string> keys = {"gt/comm/0,1/rank0", "gt/comm/0,1/rank1"};
  const std::vector<std::string> values = {"tcp://a", "tcp://b"};
  msgs["store-get"] = wire::encode_store_get(14, keys, 500);
  msgs["store-reply"] = wire::encode_store_reply(14, keys, values, {});
  msgs["store-reply-missing"] = wire::encode_store_reply(14, {}, {}, keys);

  for (auto& [name, m] : msgs) {
    std::vector<uint8_t> input = {0};
    const auto b = bytes_of(m);
    input.insert(input.end(), b.begin(), b.end());
    c.write("wire", name, input);
  }
  // The same batch at an odd address, cut short, and with a flipped byte.
  const auto batch = bytes_of(msgs["batch"]);
  std::vector<uint8_t> odd = {1};
  odd.insert(odd.end(), batch.begin(), batch.end());
  c.write("wire", "batch-misaligned", odd);
  std::vector<uint8_t> cut(odd.begin(), odd.begin() + static_cast<ptrdiff_t>(odd.size() / 2));
  cut[0] = 0;
  c.write("wire", "batch-truncated", cut);
  std::vector<uint8_t> flipped = odd;
  flipped[0] = 0;
  flipped[flipped.size() / 3] ^= 0xFF;
  c.write("wire", "batch-corrupt", flipped);
}

// ---- programs: sharding and executor -----------------------------------------

// A ProgramWriter that names the tensors a program creates, so seeds read
// like client code: refs are computed from the names.
class Prog {
 public:
  Prog(uint8_t mode, uint8_t setup) : w_(mode, setup) {}

  Prog& op(const std::string& out, OpCode code, const std::vector<std::string>& in,
           std::vector<int64_t> ints = {}, std::vector<double> floats = {},
           DType dtype = DType::Float32) {
    w_.op(code, refs(in), out.empty() ? 0 : 1, std::move(ints), std::move(floats), dtype);
    if (!out.empty()) names_.push_back(out);
    return *this;
  }
  Prog& upload(const std::string& out, std::vector<int64_t> shape, DType dtype = DType::Float32,
               uint8_t fill = 1) {
    w_.upload(std::move(shape), dtype, fill);
    names_.push_back(out);
    return *this;
  }
  Prog& free(const std::vector<std::string>& in) {
    w_.free(refs(in));
    return *this;
  }
  Prog& fetch(const std::string& in, uint8_t request = 1) {
    w_.fetch(ref(in), request);
    return *this;
  }
  Prog& sync(uint8_t request = 2) {
    w_.sync(request);
    return *this;
  }
  Prog& enter(size_t name, bool backward = false) {
    w_.scope(backward ? ScopeAction::EnterBackward : ScopeAction::Enter, name);
    return *this;
  }
  Prog& exit() {
    w_.scope(ScopeAction::Exit, 0);
    return *this;
  }
  Prog& scope(ScopeAction a, size_t name) {
    w_.scope(a, name);
    return *this;
  }
  Prog& collective(const std::string& out, uint8_t code, const std::vector<std::string>& in,
                   std::vector<int64_t> ints, DType dtype = DType::Float32) {
    w_.collective(code, refs(in), out.empty() ? 0 : 1, std::move(ints), dtype);
    if (!out.empty()) names_.push_back(out);
    return *this;
  }
  Prog& configure(size_t index) {
    w_.configure(index);
    return *this;
  }
  Prog& end_batch(uint8_t session = 0) {
    w_.end_batch(session);
    return *this;
  }
  Prog& event(uint8_t arg) {
    w_.event(arg);
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return w_.bytes(); }

 private:
  uint8_t ref(const std::string& name) const {
    for (size_t i = names_.size(); i-- > 0;) {
      if (names_[i] == name) return static_cast<uint8_t>(names_.size() - 1 - i);
    }
    std::fprintf(stderr, "make_corpus: no tensor named %s\n", name.c_str());
    std::exit(1);
  }
  std::vector<uint8_t> refs(const std::vector<std::string>& in) const {
    std::vector<uint8_t> out;
    for (const auto& n : in) out.push_back(ref(n));
    return out;
  }
  ProgramWriter w_;
  std::vector<std::string> names_;
};

// kSignalNames indices.
constexpr size_t kBatch = 0, kGrads = 1, kParams = 2, kWeight = 3, kInput = 4, kOutput = 5,
                 kStage0 = 6, kStage1 = 7, kUnit = 8, kNowhere = 9;

// setup byte of the sharding target: 3 workers, home, auto shard, config.
uint8_t setup(bool three, int home, bool auto_shard, size_t config) {
  return static_cast<uint8_t>((three ? 1 : 0) | (auto_shard ? 2 : 0) | (home << 2) | (config << 4));
}

// One data-parallel training step, the way the client's autograd issues it.
Prog data_parallel_step(uint8_t setup_byte) {
  Prog p(0, setup_byte);
  p.enter(kParams)
      .op("w", OpCode::Randn, {}, {4, 3})
      .op("b", OpCode::Zeros, {}, {3})
      .exit()
      .enter(kBatch)
      .upload("x", {8, 4})
      .upload("y", {8}, DType::Int64, 0)
      .op("h", OpCode::Matmul, {"x", "w"})
      .op("z", OpCode::Add, {"h", "b"})
      .op("ls", OpCode::LogSoftmax, {"z"}, {1})
      .op("yi", OpCode::Unsqueeze, {"y"}, {1})
      .op("picked", OpCode::Gather, {"ls", "yi"}, {1})
      .op("loss0", OpCode::Mean, {"picked"}, {0})
      .op("loss", OpCode::Neg, {"loss0"})
      .exit()
      .enter(kBatch, true)
      .op("g", OpCode::Ones, {}, {8, 3})
      .op("gs", OpCode::MulScalar, {"g"}, {}, {0.125})
      .op("xt", OpCode::Transpose, {"x"}, {0, 1})
      .op("gw", OpCode::Matmul, {"xt", "gs"})
      .op("gb", OpCode::Sum, {"gs"}, {0, 0})
      .exit()
      .op("", OpCode::AddInplace, {"w", "gw"}, {}, {-0.1})
      .op("", OpCode::SubInplace, {"b", "gb"})
      .free({"h", "z", "ls", "yi", "picked", "g", "gs", "xt", "gw", "gb"})
      .fetch("loss")
      .sync();
  return p;
}

void sharding_seeds(Corpus& c) {
  c.write("sharding", "data-parallel-2", data_parallel_step(setup(false, 0, false, 0)).bytes());
  c.write("sharding", "data-parallel-3-home1",
          data_parallel_step(setup(true, 1, false, 0)).bytes());
  c.write("sharding", "auto-shard", data_parallel_step(setup(true, 0, true, 4)).bytes());

  Prog tp(0, setup(true, 0, false, 1));
  tp.enter(kWeight)
      .op("w1", OpCode::Randn, {}, {4, 6})
      .op("b1", OpCode::Zeros, {}, {6})
      .exit()
      .enter(kInput)
      .op("x", OpCode::Rand, {}, {2, 4})
      .exit()
      .enter(kOutput)
      .op("y", OpCode::Matmul, {"x", "w1"})
      .op("z", OpCode::Add, {"y", "b1"})
      .op("a", OpCode::Gelu, {"z"})
      .op("s", OpCode::Softmax, {"a"}, {-1})
      .op("m", OpCode::Argmax, {"s"}, {0, 1})
      .op("mx", OpCode::Amax, {"a"}, {0, 0})
      .exit()
      .fetch("a")
      .fetch("m", 3)
      .fetch("mx", 4)
      .sync();
  c.write("sharding", "tensor-parallel", tp.bytes());

  Prog pipe(0, setup(true, 0, false, 2));
  pipe.enter(kStage0)
      .upload("x", {4, 4})
      .op("h0", OpCode::Tanh, {"x"})
      .exit()
      .enter(kStage1)
      .op("h1", OpCode::MulScalar, {"h0"}, {}, {2.0})
      .op("h2", OpCode::Sigmoid, {"h1"})
      .exit()
      .enter(kUnit)
      .op("h3", OpCode::Exp, {"h2"})
      .op("h4", OpCode::Reshape, {"h3"}, {2, 8})
      .fetch("h4")
      .exit()
      .enter(kStage1, true)
      .op("g", OpCode::Ones, {}, {4, 4})
      .exit()
      .sync();
  c.write("sharding", "pipeline", pipe.bytes());

  // Axis-1 splits and the shape ops that keep or move the split dim.
  Prog shapes(0, setup(true, 2, false, 3));
  shapes.enter(kBatch)
      .op("a", OpCode::Arange, {}, {}, {0, 24, 1})
      .op("t", OpCode::Full, {}, {2, 3, 4}, {1.5})
      .op("u", OpCode::Unsqueeze, {"t"}, {0})
      .op("s", OpCode::Squeeze, {"u"}, {0})
      .op("p", OpCode::Permute, {"s"}, {2, 0, 1})
      .op("v", OpCode::View, {"t"}, {2, 12})
      .op("e", OpCode::Expand, {"t"}, {3, 2, 3, 4})
      .op("sl", OpCode::Slice, {"t"}, {2, 0, 2, 1})
      .op("ct", OpCode::Cat, {"t", "t"}, {0})
      .op("st", OpCode::Stack, {"t", "t"}, {1})
      .op("al", OpCode::Alias, {"t"})
      .op("mn", OpCode::Amin, {"t"}, {1, 1})
      .op("sm", OpCode::Sum, {"t"}, {0})
      .op("me", OpCode::Mean, {"t"}, {0, 1, 2})
      .op("", OpCode::ZeroInplace, {"al"})
      .exit()
      .fetch("p")
      .fetch("e", 2)
      .fetch("ct", 3)
      .fetch("st", 4)
      .fetch("sm", 5)
      .fetch("me", 6)
      .sync();
  c.write("sharding", "split-axis1-shapes", shapes.bytes());

  // Rows drawn from a resident dataset by a split index, scatter into zeros.
  Prog index(0, setup(false, 0, false, 0));
  index.enter(kParams)
      .upload("data", {10, 3})
      .exit()
      .enter(kBatch)
      .upload("idx", {4}, DType::Int64, 2)
      .op("rows", OpCode::IndexSelect, {"data", "idx"}, {0})
      .op("z", OpCode::Zeros, {}, {4, 3})
      .op("gi", OpCode::Zeros, {}, {4, 3}, {}, DType::Int64)
      .op("sa", OpCode::ScatterAdd, {"z", "gi", "rows"}, {1})
      .op("ia", OpCode::IndexAdd, {"data", "idx", "rows"}, {0})
      .op("ss", OpCode::SliceScatter, {"z", "rows"}, {0, 0, 4, 1})
      .op("wh", OpCode::Where, {"sa", "rows", "z"})
      .exit()
      .fetch("ia")
      .sync();
  c.write("sharding", "index-ops", index.bytes());

  // A config sent mid-stream, frees, a worker lost and one joining, refusals.
  Prog events(0, setup(true, 0, false, 4));
  events.op("x", OpCode::Ones, {}, {6, 2})
      .configure(0)
      .end_batch()
      .enter(kBatch)
      .op("y", OpCode::Ones, {}, {6, 2})
      .op("s", OpCode::Add, {"x", "y"})
      .exit()
      .exit()                                // refused: nothing left to leave
      .scope(ScopeAction::UnitBegin, kUnit)  // refused from a client
      .enter(kNowhere)
      .collective("c", 1, {"s"}, {2, 0, 1, 0, 0, 6, 2})  // refused from a client
      .free({"y"})
      .fetch("y")  // freed: refused
      .event(0)    // a worker joins
      .op("z", OpCode::Zeros, {}, {6})
      .event(3)  // a worker is lost
      .sync();
  c.write("sharding", "events-and-refusals", events.bytes());

  // Inputs that crashed the dispatcher once (docs/fuzzing.md, "Bugs found").
  Prog no_output(0, setup(false, 0, false, 0));
  no_output.enter(kParams).op("", OpCode::Randn, {}, {2}).exit().sync();
  c.write("sharding", "regress-randn-without-output", no_output.bytes());
  Prog empty_shard(0, setup(false, 0, false, 0));
  empty_shard.enter(kBatch).op("x", OpCode::Ones, {}, {1, 2}).exit().fetch("x");
  c.write("sharding", "regress-gather-empty-shard", empty_shard.bytes());
  Prog select_0d(0, setup(false, 0, false, 0));
  select_0d.enter(kParams)
      .op("s", OpCode::Rand, {}, {})
      .exit()
      .enter(kBatch)
      .upload("i", {4}, DType::Int64, 0)
      .op("r", OpCode::IndexSelect, {"s", "i"}, {0})
      .exit()
      .sync();
  c.write("sharding", "regress-index-select-0d", select_0d.bytes());
  Prog overflow(0, setup(false, 0, false, 4));
  overflow.op("x", OpCode::Ones, {}, {4})
      .op("r", OpCode::Reshape, {"x"}, {int64_t{1} << 40, int64_t{1} << 40})
      .op("s", OpCode::Slice, {"x"}, {0, 0, 2, INT64_MAX})
      .sync();
  c.write("sharding", "regress-shape-overflow", overflow.bytes());

  // A batch as the client encodes it, in raw mode.
  fuzz::Writer raw;
  raw.u8(1).u8(setup(false, 0, false, 0));
  zmq::message_t batch = wire::encode_batch(0, 1, training_batch());
  std::vector<char> data(24, 0);
  const std::vector<std::vector<char>> frames = {bytes_of(batch), data};
  fuzz::write_raw_message(raw, frames);
  c.write("sharding", "raw-batch", raw.bytes());
}

void executor_seeds(Corpus& c) {
  c.write("executor", "training-step", data_parallel_step(0).bytes());

  // Every creation op and dtype.
  Prog create(0, 0);
  create.op("r", OpCode::Randn, {}, {2, 3})
      .op("u", OpCode::Rand, {}, {3}, {}, DType::Float64)
      .op("z", OpCode::Zeros, {}, {2, 2}, {}, DType::Int32)
      .op("o", OpCode::Ones, {}, {2}, {}, DType::Bool)
      .op("f", OpCode::Full, {}, {2, 2}, {3.5}, DType::BFloat16)
      .op("a", OpCode::Arange, {}, {}, {0, 5, 0.5}, DType::Float16)
      .op("", OpCode::ManualSeed, {}, {42})
      .upload("d64", {3}, DType::Float64, 3)
      .upload("i32", {2, 2}, DType::Int32, 5)
      .upload("b", {4}, DType::Bool, 7)
      .upload("h", {2}, DType::Float16, 9)
      .op("to", OpCode::To, {"i32"}, {}, {}, DType::Float32)
      .fetch("r")
      .fetch("a", 2)
      .fetch("b", 3)
      .sync();
  c.write("executor", "creation", create.bytes());

  // Elementwise families, comparisons and where.
  Prog ew(0, 0);
  ew.upload("x", {2, 3}, DType::Float32, 3)
      .upload("y", {3}, DType::Float32, 5)
      .op("a", OpCode::Add, {"x", "y"})
      .op("s", OpCode::Sub, {"x", "y"})
      .op("m", OpCode::Mul, {"a", "s"})
      .op("d", OpCode::Div, {"m", "y"})
      .op("as", OpCode::AddScalar, {"d"}, {1})
      .op("ss", OpCode::SubScalar, {"as"}, {}, {0.5})
      .op("rs", OpCode::RSubScalar, {"ss"}, {2})
      .op("ds", OpCode::DivScalar, {"rs"}, {}, {3})
      .op("rd", OpCode::RDivScalar, {"ds"}, {}, {1})
      .op("l", OpCode::Log, {"rd"})
      .op("q", OpCode::Sqrt, {"l"})
      .op("rq", OpCode::Rsqrt, {"q"})
      .op("ab", OpCode::Abs, {"rq"})
      .op("sg", OpCode::Sign, {"ab"})
      .op("pw", OpCode::Pow, {"x", "y"})
      .op("ps", OpCode::PowScalar, {"pw"}, {2})
      .op("rp", OpCode::RPowScalar, {"ps"}, {}, {2})
      .op("gb", OpCode::GeluBackward, {"x", "x"})
      .op("lt", OpCode::Lt, {"x", "y"})
      .op("ge", OpCode::GeScalar, {"x"}, {}, {0.5})
      .op("eq", OpCode::EqScalar, {"x"}, {1})
      .op("ne", OpCode::Ne, {"lt", "ge"})
      .op("w", OpCode::Where, {"ne", "x", "y"})
      .fetch("w")
      .fetch("rp", 2)
      .sync();
  c.write("executor", "elementwise", ew.bytes());

  // In-place updates, a fetch in flight while its tensor is written.
  Prog inplace(0, 0);
  inplace.upload("p", {4}, DType::Float32, 1)
      .upload("g", {4}, DType::Float32, 2)
      .op("m", OpCode::Zeros, {}, {4})
      .fetch("p")
      .op("", OpCode::AddcmulInplace, {"m", "g", "g"}, {}, {0.1})
      .op("", OpCode::AddcdivInplace, {"p", "g", "m"}, {}, {-0.01})
      .op("", OpCode::AddScalarInplace, {"p"}, {1})
      .op("", OpCode::SubScalarInplace, {"p"}, {}, {0.5})
      .op("", OpCode::MulInplace, {"p", "g"})
      .op("", OpCode::CopyInplace, {"m", "p"})
      .fetch("p", 2)
      .sync();
  c.write("executor", "inplace", inplace.bytes());

  // Index ops with indices in and out of range (fill 0: zeros; 200: large).
  Prog idx(0, 0);
  idx.upload("t", {5, 3}, DType::Float32, 1)
      .upload("i", {4}, DType::Int64, 0)
      .upload("bad", {2}, DType::Int64, 200)
      .op("sel", OpCode::IndexSelect, {"t", "i"}, {0})
      .op("oob", OpCode::IndexSelect, {"t", "bad"}, {0})
      .op("gi", OpCode::Zeros, {}, {5, 3}, {}, DType::Int64)
      .op("ga", OpCode::Gather, {"t", "gi"}, {1})
      .op("sa", OpCode::ScatterAdd, {"t", "gi", "t"}, {0})
      .op("ia", OpCode::IndexAdd, {"t", "i", "sel"}, {0})
      .op("ss", OpCode::SliceScatter, {"t", "sel"}, {0, 1, 5, 1})
      .fetch("oob")
      .sync();
  c.write("executor", "index", idx.bytes());

  // Sessions, Bye, bad ids, poisoned inputs, refused payloads.
  Prog sessions(0, 0);
  sessions.op("a", OpCode::Ones, {}, {2})
      .end_batch(1)  // session 2
      .op("b", OpCode::Ones, {}, {3})
      .op("c", OpCode::Add, {"a", "b"})  // a lives in session 1
      .op("d", OpCode::Relu, {"c"})      // poisoned input
      .fetch("d")
      .event(1)  // Bye for session 2
      .end_batch(0)
      .op("e", OpCode::Reshape, {"a"}, {3})  // invalid shape
      .op("f", OpCode::FromData, {}, {2})    // no payload
      .free({"a", "a"})
      .sync();
  c.write("executor", "sessions", sessions.bytes());

  // Collectives: well formed (no backend here) and malformed.
  Prog coll(0, 0);
  // An all_reduce poisons its input when it fails, so it comes last.
  coll.op("t", OpCode::Ones, {}, {2, 2})
      .collective("g", 2, {"t"}, {2, 0, 1, 0, 0, 2, 2})
      .collective("", 7, {}, {1, 0, 0, 0})
      .collective("", 5, {"t"}, {2, 0, 1, 1, 3, 2, 2})
      .collective("r", 6, {}, {2, 0, 1, 1, 3, 2, 2})
      .collective("", 4, {"t"}, {3, 0, 1, 2, 0, 0, 2, 2})
      .collective("", 3, {"t"}, {1, 1, 0, 0})
      .collective("", 1, {"t", "t"}, {2, 0, 1, 0, 0, 4, 4})
      .collective("", 1, {"t"}, {2, 0, 1, 0, 0, 2, 2})
      .sync();
  c.write("executor", "collectives", coll.bytes());

  // Shapes, reductions and matmul broadcasting.
  Prog shape(0, 0);
  shape.upload("x", {2, 3, 4}, DType::Float32, 3)
      .op("r", OpCode::Reshape, {"x"}, {6, -1})
      .op("v", OpCode::View, {"x"}, {-1})
      .op("t", OpCode::Transpose, {"x"}, {0, 2})
      .op("p", OpCode::Permute, {"x"}, {1, 2, 0})
      .op("sl", OpCode::Slice, {"x"}, {-1, 1, INT64_MAX, 2})
      .op("u", OpCode::Unsqueeze, {"x"}, {-1})
      .op("sq", OpCode::Squeeze, {"u"}, {})
      .op("e", OpCode::Expand, {"u"}, {2, 2, 3, 4, 5})
      .op("c", OpCode::Cat, {"x", "x", "x"}, {1})
      .op("st", OpCode::Stack, {"x", "x"}, {-1})
      .op("al", OpCode::Alias, {"x"})
      .op("sm", OpCode::Softmax, {"x"}, {-1})
      .op("ls", OpCode::LogSoftmax, {"x"}, {0})
      .op("s", OpCode::Sum, {"x"}, {1, 0, 2})
      .op("m", OpCode::Mean, {"x"}, {0})
      .op("mx", OpCode::Amax, {"x"}, {0, -1})
      .op("mn", OpCode::Amin, {"x"}, {1, 1})
      .op("am", OpCode::Argmax, {"x"}, {0})
      .op("w", OpCode::Ones, {}, {4, 5})
      .op("mm", OpCode::Matmul, {"x", "w"})
      .op("vec", OpCode::Ones, {}, {4})
      .op("mv", OpCode::Matmul, {"x", "vec"})
      .op("vv", OpCode::Matmul, {"vec", "vec"})
      .fetch("mm")
      .fetch("sq", 2)
      .fetch("am", 3)
      .sync();
  c.write("executor", "shapes-reductions-matmul", shape.bytes());

  // An input that crashed the worker once (docs/fuzzing.md, "Bugs found").
  Prog select_0d(0, 0);
  select_0d.op("s", OpCode::Rand, {}, {}, {}, DType::Float64)
      .upload("i", {4}, DType::Int64, 0)
      .op("r", OpCode::IndexSelect, {"s", "i"}, {0})
      .fetch("r")
      .sync();
  c.write("executor", "regress-index-select-0d-overflow", select_0d.bytes());

  // Unit markers the dispatcher sends around a compile scope.
  Prog units(0, 0);
  units.scope(ScopeAction::UnitBegin, kUnit)
      .op("x", OpCode::Ones, {}, {3})
      .op("y", OpCode::Exp, {"x"})
      .scope(ScopeAction::UnitEnd, kUnit)
      .fetch("y")
      .sync();
  c.write("executor", "unit-markers", units.bytes());

  // A batch as the dispatcher forwards it, in raw mode, then a Bye.
  fuzz::Writer raw;
  raw.u8(1).u8(0);
  zmq::message_t batch = wire::encode_batch(3, 1, training_batch());
  std::vector<char> data(24, 0);
  const std::vector<std::vector<char>> frames = {bytes_of(batch), data};
  fuzz::write_raw_message(raw, frames);
  zmq::message_t bye = wire::encode_bye(3);
  const std::vector<std::vector<char>> bye_frames = {bytes_of(bye)};
  fuzz::write_raw_message(raw, bye_frames);
  c.write("executor", "raw-batch", raw.bytes());
}

// ---- config and instruction log ---------------------------------------------

void config_seeds(Corpus& c, const fs::path& source) {
  for (size_t i = 0; i < std::size(fuzz::kConfigs); ++i) {
    c.write("config", "fuzz-config-" + std::to_string(i), fuzz::kConfigs[i]);
  }
  for (const auto& e : fs::directory_iterator(source / "configs")) {
    if (e.path().extension() != ".yaml") continue;
    std::ifstream in(e.path(), std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), {});
    c.write("config", e.path().stem().string(), text);
  }
  const std::map<std::string, std::string> bad = {
      {"duplicate-signal", "a: {compile: true}\na: {compile: false}\n"},
      {"unknown-key", "a:\n  shard: {axis: 0, replicas: 2}\n"},
      {"wrong-type", "a:\n  shard: {axis: zero}\n  compile: maybe\n"},
      {"backward-missing", "a:\n  backward: b\n"},
      {"two-documents", "a: {compile: true}\n---\nb: {compile: true}\n"},
      {"anchors", "base: &b {shard: {axis: 0}}\nc: *b\nd:\n  <<: *b\n  compile: true\n"},
      {"deep", std::string(64, '[') + std::string(64, ']') + "\n"},
      {"workers", "a:\n  shard: {replicated: true, workers: [0, 0, -1, 99999999999]}\n"},
      {"flow-and-tabs", "{a: {shard: {axis: -1}}, \"b c\": {}}\n\tx: 1\n"},
      {"scalar-root", "42\n"},
  };
  for (const auto& [name, text] : bad) c.write("config", name, text);
}

void instruction_log_seeds(Corpus& c) {
  LogEvent e;
  e.elapsed_s = 1.5;
  e.seq = 150;
  e.event = "COMPILE";
  e.component = "WORKER 0";
  e.kind = "Starting";
  e.details = "sequence=abc";
  LogEvent awkward = e;
  awkward.op = "a/b";
  awkward.details = "what=tab\there \"quoted\" back\\slash \x01 \xc3\xa9 \xff end";
  RawEvent raw;
  raw.event = "EXEC";
  raw.kind = "Op";
  raw.op = "matmul";
  raw.session = 3;
  raw.n_in = 2;
  raw.in[0] = 1;
  raw.in[1] = 2;
  raw.n_out = 1;
  raw.out[0] = 3;
  raw.ndim = 2;
  raw.shape[0] = 8;
  raw.shape[1] = 3;
  raw.dur_ns = 12345;
  LogEvent exec = e;
  exec.event = "EXEC";
  exec.kind = "Op";
  exec.op = "matmul";
  exec.details = raw_details(raw);
  for (const auto& [name, ev] :
       std::map<std::string, LogEvent>{{"compile", e}, {"awkward", awkward}, {"exec", exec}}) {
    c.write("instruction_log", name + ".jsonl", format_json(ev) + "\n");
    c.write("instruction_log", name + ".log", format_text(ev) + "\n");
  }
  c.write("instruction_log", "json-escapes.jsonl",
          R"( { "seq" : 7 , "op":"a\/b", "event":"EXEC","component":"WORKER 1","kind":"Op",)"
          R"("details":"\u00e9\ud83d\ude00\n","elapsed_s":2e-3,"x":1} )");
  c.write("instruction_log", "details-only", "session=3 in=1,2 what=it failed: a b c why=x");
  LogEvent clock = e;
  clock.event = "CLOCK";
  clock.component = "DISPATCHER";
  clock.kind = "";
  clock.details = "unix_s=1700000000.123456";
  LogEvent stats = e;
  stats.event = "STATS";
  stats.component = "WORKER 12";
  stats.kind = "";
  stats.elapsed_s = 12345.678901;
  stats.seq = 18446744073709551615ull;
  stats.details = "queue=3 busy_Elementwise=0.25 busy_Linalg=0.5 tensors=10 bytes=4096";
  LogEvent dropped = e;
  dropped.event = "DROPPED";
  dropped.kind = "";
  dropped.details = "n=1000";
  for (const auto& [name, ev] :
       std::map<std::string, LogEvent>{{"clock", clock}, {"stats", stats}, {"dropped", dropped}}) {
    c.write("instruction_log", name + ".jsonl", format_json(ev) + "\r\n");
    c.write("instruction_log", name + ".log", format_text(ev));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s SOURCE_DIR OUT_DIR\n", argv[0]);
    return 2;
  }
  Corpus c{argv[2]};
  wire_seeds(c);
  sharding_seeds(c);
  executor_seeds(c);
  config_seeds(c, argv[1]);
  instruction_log_seeds(c);
  std::printf("%zu seeds written under %s\n", c.files, argv[2]);
  return 0;
}

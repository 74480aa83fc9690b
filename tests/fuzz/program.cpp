#include "tests/fuzz/program.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "common/op_table.h"
#include "dispatcher/sharding.h"

namespace gt::fuzz {

uint16_t Bytes::u16() {
  const uint16_t lo = u8();
  return static_cast<uint16_t>(lo | (u8() << 8));
}

uint64_t Bytes::u64() {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(u8()) << (8 * i);
  return v;
}

std::string Bytes::text(size_t n) {
  n = std::min(n, left());
  std::string s(reinterpret_cast<const char*>(data_ + pos_), n);
  pos_ += n;
  return s;
}

Writer& Writer::u16(uint16_t v) {
  u8(static_cast<uint8_t>(v));
  return u8(static_cast<uint8_t>(v >> 8));
}

Writer& Writer::u64(uint64_t v) {
  for (int i = 0; i < 8; ++i) u8(static_cast<uint8_t>(v >> (8 * i)));
  return *this;
}

Writer& Writer::text(std::string_view s) {
  out_.insert(out_.end(), s.begin(), s.end());
  return *this;
}

namespace {

// Frames larger than this are left empty: the targets bound memory, and a
// shape the bytes make huge is refused before its payload is read anyway.
constexpr int64_t kMaxFrameBytes = int64_t{1} << 20;

// Payload elements: small values, negative ones included, so index tensors
// (gather, index_select) are sometimes in range and sometimes not.
std::vector<char> filled_frame(std::span<const int64_t> shape, DType dtype, uint8_t fill) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || (d > 0 && n > kMaxFrameBytes / d)) return {};
    n *= d;
  }
  const int64_t size = element_size(dtype);
  if (size == 0 || n > kMaxFrameBytes / size) return {};
  std::vector<char> out(static_cast<size_t>(n * size));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = fill == 0 ? 0 : (i * fill) % 11 - 3;
    char* dst = out.data() + i * size;
    switch (dtype) {
      case DType::Float32: {
        const float f = static_cast<float>(v) * 0.5f;
        std::memcpy(dst, &f, sizeof f);
        break;
      }
      case DType::Float64: {
        const double f = static_cast<double>(v) * 0.5;
        std::memcpy(dst, &f, sizeof f);
        break;
      }
      case DType::Int32: {
        const auto x = static_cast<int32_t>(v);
        std::memcpy(dst, &x, sizeof x);
        break;
      }
      case DType::Int64:
        std::memcpy(dst, &v, sizeof v);
        break;
      case DType::Bool:
        *dst = static_cast<char>(v & 1);
        break;
      case DType::Float16:
      case DType::BFloat16: {
        // Raw bit patterns: NaNs and infinities come up as well.
        const auto bits = static_cast<uint16_t>(i * fill * 257);
        std::memcpy(dst, &bits, sizeof bits);
        break;
      }
    }
  }
  return out;
}

struct ProgramReader {
  Bytes& in;
  std::vector<wire::TensorId> created;  // fresh ids, oldest first
  wire::TensorId next_id = 1;

  wire::TensorId id_ref(uint8_t r) {
    if (r < 0xF0) {
      return created.empty() ? r : created[created.size() - 1 - r % created.size()];
    }
    switch (r) {
      case 0xF0:
        return in.u64();
      case 0xF1:
        return dispatcher::kTempIdBase + in.u8();
      case 0xF2:
        return 0;
      default:
        return r;
    }
  }
  wire::TensorId id_ref() { return id_ref(in.u8()); }

  wire::TensorId out_ref() {
    const uint8_t r = in.u8();
    if (r < 0xC0) {
      created.push_back(next_id);
      return next_id++;
    }
    return r < 0xF0 ? id_ref(static_cast<uint8_t>(r - 0xC0)) : id_ref(r);
  }

  int64_t small_int() {
    const uint8_t b = in.u8();
    if (b == 0x80) return static_cast<int64_t>(in.u64());
    if (b > 0x80 && b <= 0x80 + std::size(kBoundaryInts)) return kBoundaryInts[b - 0x81];
    return static_cast<int8_t>(b);
  }

  double small_double() {
    const uint8_t b = in.u8();
    return b == 0x80 ? std::bit_cast<double>(in.u64()) : static_cast<int8_t>(b) / 2.0;
  }

  std::string name() {
    const uint8_t s = in.u8();
    if (s % 12 < std::size(kSignalNames)) return std::string(kSignalNames[s % 12]);
    return in.text(in.u16() % 512);
  }

  // Inputs, outputs, ints, floats and dtype of an Op or Collective record.
  void args(wire::Instr& instr) {
    const int n_in = in.u8() % 9;
    for (int i = 0; i < n_in; ++i) instr.inputs.push_back(id_ref());
    const int n_out = in.u8() % 4;
    for (int i = 0; i < n_out; ++i) instr.outputs.push_back(out_ref());
    const int n_ints = in.u8() % 12;
    for (int i = 0; i < n_ints; ++i) instr.ints.push_back(small_int());
    const int n_floats = in.u8() % 4;
    for (int i = 0; i < n_floats; ++i) instr.floats.push_back(small_double());
    instr.dtype = static_cast<DType>(in.u8() % 9);
  }

  void payload(wire::Instr& instr, Batch& b) {
    const uint8_t p = in.u8();
    switch (p % 4) {
      case 0: {
        const uint8_t fill = in.u8();
        instr.payload = static_cast<int32_t>(b.frames.size());
        b.frames.push_back(filled_frame(instr.ints, instr.dtype, fill));
        break;
      }
      case 1:
        instr.payload = -1;
        break;
      case 2:
        instr.payload = static_cast<int32_t>(b.frames.size());
        b.frames.emplace_back(in.u16(), '\x01');
        break;
      default:
        instr.payload = static_cast<int8_t>(in.u8());
        break;
    }
  }
};

}  // namespace

std::vector<Batch> read_program(Bytes& in, size_t max_instrs) {
  ProgramReader r{in, {}, 1};
  std::vector<Batch> batches(1);
  size_t count = 0;
  while (!in.empty() && count < max_instrs) {
    const uint8_t tag = in.u8() % 16;
    Batch& b = batches.back();
    wire::Instr instr;
    if (tag < static_cast<uint8_t>(Tag::Free) || tag == static_cast<uint8_t>(Tag::RawOp)) {
      instr.kind = wire::InstrKind::Op;
      instr.op = static_cast<OpCode>(tag == static_cast<uint8_t>(Tag::RawOp) ? in.u16()
                                                                             : in.u8() % kNumOps);
      r.args(instr);
      if (instr.op == OpCode::FromData) r.payload(instr, b);
    } else {
      switch (static_cast<Tag>(tag)) {
        case Tag::Free: {
          instr.kind = wire::InstrKind::Free;
          const int n = in.u8() % 6;
          for (int i = 0; i < n; ++i) instr.inputs.push_back(r.id_ref());
          break;
        }
        case Tag::Fetch:
          instr.kind = wire::InstrKind::Fetch;
          instr.inputs.push_back(r.id_ref());
          instr.request = in.u8();
          break;
        case Tag::Sync:
          instr.kind = wire::InstrKind::Sync;
          instr.request = in.u8();
          break;
        case Tag::Scope:
          instr.kind = wire::InstrKind::Scope;
          instr.ints.push_back(in.u8() % 6);
          instr.name = r.name();
          break;
        case Tag::Collective:
          instr.kind = wire::InstrKind::Collective;
          instr.op = static_cast<OpCode>(in.u8() % 9);
          r.args(instr);
          break;
        case Tag::Configure: {
          instr.kind = wire::InstrKind::Configure;
          const uint8_t sel = in.u8();
          instr.name = sel % 8 < std::size(kConfigs) ? std::string(kConfigs[sel % 8])
                                                     : in.text(in.u16() % 2048);
          break;
        }
        case Tag::EndBatch:
          batches.emplace_back().session = 1 + in.u8() % 3;
          continue;
        case Tag::Event: {
          Batch e;
          e.session = b.session;
          e.event = true;
          e.event_arg = in.u8();
          const uint64_t session = b.session;
          batches.push_back(std::move(e));
          batches.emplace_back().session = session;
          continue;
        }
        default:
          continue;
      }
    }
    b.instrs.push_back(std::move(instr));
    ++count;
  }
  return batches;
}

std::vector<std::vector<char>> read_raw_message(Bytes& in) {
  std::vector<std::vector<char>> frames(in.u8() % 4 + 1);
  for (auto& f : frames) {
    const std::string s = in.text(in.u16());
    f.assign(s.begin(), s.end());
  }
  return frames;
}

void write_raw_message(Writer& w, std::span<const std::vector<char>> frames) {
  w.u8(static_cast<uint8_t>(frames.size() - 1));
  for (const auto& f : frames) {
    w.u16(static_cast<uint16_t>(f.size()));
    w.text(std::string_view(f.data(), f.size()));
  }
}

namespace {

// Writes an int or float so that Bytes reads it back (the escape when the
// value is outside the int8 shortcut).
void write_int(Writer& w, int64_t v) {
  const auto shortcut = static_cast<int64_t>(-128 + std::size(kBoundaryInts));
  if (v > shortcut && v <= 127) {
    w.u8(static_cast<uint8_t>(static_cast<int8_t>(v)));
  } else {
    w.u8(0x80).u64(static_cast<uint64_t>(v));
  }
}

void write_double(Writer& w, double v) {
  const double twice = v * 2;
  if (twice >= -127 && twice <= 127 && static_cast<double>(static_cast<int8_t>(twice)) == twice) {
    w.u8(static_cast<uint8_t>(static_cast<int8_t>(twice)));
  } else {
    w.u8(0x80).u64(std::bit_cast<uint64_t>(v));
  }
}

}  // namespace

void ProgramWriter::args(std::vector<uint8_t> inputs, int outputs, const std::vector<int64_t>& ints,
                         const std::vector<double>& floats, DType dtype) {
  w_.u8(static_cast<uint8_t>(inputs.size()));
  for (uint8_t r : inputs) w_.u8(r);
  w_.u8(static_cast<uint8_t>(outputs));
  for (int i = 0; i < outputs; ++i) w_.u8(0);  // fresh ids
  w_.u8(static_cast<uint8_t>(ints.size()));
  for (int64_t v : ints) write_int(w_, v);
  w_.u8(static_cast<uint8_t>(floats.size()));
  for (double v : floats) write_double(w_, v);
  w_.u8(static_cast<uint8_t>(dtype));
}

ProgramWriter& ProgramWriter::op(OpCode code, std::vector<uint8_t> inputs, int outputs,
                                 std::vector<int64_t> ints, std::vector<double> floats,
                                 DType dtype) {
  w_.u8(static_cast<uint8_t>(Tag::Op)).u8(static_cast<uint8_t>(code));
  args(std::move(inputs), outputs, ints, floats, dtype);
  if (code == OpCode::FromData) w_.u8(1);  // no payload
  return *this;
}

ProgramWriter& ProgramWriter::upload(std::vector<int64_t> shape, DType dtype, uint8_t fill) {
  w_.u8(static_cast<uint8_t>(Tag::Op)).u8(static_cast<uint8_t>(OpCode::FromData));
  args({}, 1, shape, {}, dtype);
  w_.u8(0).u8(fill);
  return *this;
}

ProgramWriter& ProgramWriter::free(std::vector<uint8_t> inputs) {
  w_.u8(static_cast<uint8_t>(Tag::Free)).u8(static_cast<uint8_t>(inputs.size()));
  for (uint8_t r : inputs) w_.u8(r);
  return *this;
}

ProgramWriter& ProgramWriter::fetch(uint8_t input, uint8_t request) {
  w_.u8(static_cast<uint8_t>(Tag::Fetch)).u8(input).u8(request);
  return *this;
}

ProgramWriter& ProgramWriter::sync(uint8_t request) {
  w_.u8(static_cast<uint8_t>(Tag::Sync)).u8(request);
  return *this;
}

ProgramWriter& ProgramWriter::scope(wire::ScopeAction action, size_t name_index) {
  w_.u8(static_cast<uint8_t>(Tag::Scope)).u8(static_cast<uint8_t>(action));
  w_.u8(static_cast<uint8_t>(name_index));
  return *this;
}

ProgramWriter& ProgramWriter::collective(uint8_t code, std::vector<uint8_t> inputs, int outputs,
                                         std::vector<int64_t> ints, DType dtype) {
  w_.u8(static_cast<uint8_t>(Tag::Collective)).u8(code);
  args(std::move(inputs), outputs, ints, {}, dtype);
  return *this;
}

ProgramWriter& ProgramWriter::configure(size_t config_index) {
  w_.u8(static_cast<uint8_t>(Tag::Configure)).u8(static_cast<uint8_t>(config_index));
  return *this;
}

ProgramWriter& ProgramWriter::end_batch(uint8_t session_sel) {
  w_.u8(static_cast<uint8_t>(Tag::EndBatch)).u8(session_sel);
  return *this;
}

ProgramWriter& ProgramWriter::event(uint8_t arg) {
  w_.u8(static_cast<uint8_t>(Tag::Event)).u8(arg);
  return *this;
}

}  // namespace gt::fuzz

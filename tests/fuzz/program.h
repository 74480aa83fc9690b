#pragma once
// The byte formats the fuzz targets read (docs/fuzzing.md), and writers for
// them that the corpus generator uses, kept side by side so that they agree.
//
// Note [fuzz programs]
// Random bytes read as a FlatBuffers batch almost never verify, and a batch
// that does verify names ids no tensor has, so a fuzzer fed raw messages
// stays in the first checks of the dispatcher and the worker. The sharding
// and executor targets therefore read most inputs as a *program*: a list of
// records, one per instruction, whose bytes choose among valid values (an op
// of the op table, an id created earlier, a small dimension, a payload of
// the right size) with escapes to arbitrary ones (a raw op code, a raw id, a
// full 64-bit integer). Mutating a byte then turns one valid program into
// another, or into one with a single bad field, which is where the rules
// are. Reads past the end return zeros, so every input is some program.
//
// Input: [mode] [setup] then, for mode & 1 == 0, records; for mode & 1 == 1,
// raw messages: [u8 frame count - 1 (mod 4)] then per frame [u16 LE length]
// [bytes]; the first frame is a header (wire::decode), the others its data.
//
// Record: [u8 tag], tag % 16:
//   0..6  Op:          [u8 op % 81] args
//   15    Op, raw op:  [u16 LE op code] args
//         args = [u8 n % 9][n id refs] [u8 n % 4][n out refs] [u8 n % 12][n ints]
//                [u8 n % 4][n floats] [u8 dtype % 9 (7, 8: invalid codes)]
//                and for FromData: [u8 p]: p % 4 == 0 a frame of the exact size
//                filled from [u8 fill]; 1 no payload; 2 a frame of [u16 LE] bytes;
//                3 payload index [u8] as an int8
//   7     Free:        [u8 n % 6][n id refs]
//   8     Fetch:       [id ref][u8 request]
//   9     Sync:        [u8 request]
//   10    Scope:       [u8 action % 6][name]
//   11    Collective:  [u8 code % 9] args (no payload)
//   12    Configure:   [u8 sel]: sel % 8 < kConfigs.size() a fixed config, else
//                      [u16 LE length % 2048][text]
//   13    end of batch: [u8 session sel]
//   14    event:       [u8 arg] (executor: Bye for session 1 + arg % 3;
//                      sharding: a worker lost or joining)
// id ref: [u8 r]: r < 0xF0 the (r % n)-th most recent id the program created
//   (r itself when it created none); 0xF0 [u64 LE]; 0xF1 [u8 k] kTempIdBase + k;
//   0xF2: id 0; else r.
// out ref: [u8 r]: r < 0xC0 a fresh id; r < 0xF0 an id ref of r - 0xC0; else
//   as an id ref.
// int: [u8 b]: 0x80 [u64 LE] as int64; 0x81.. kBoundaryInts[b - 0x81]; else
//   b as int8. float: [u8 b]: 0x80 [u64 LE] as the bits of a double, else
//   b as int8 / 2.
// name: [u8 s]: s % 12 < kSignalNames.size() a fixed name, else
//   [u16 LE length % 512][text] (names over 256 bytes are refused).

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/wire.h"

namespace gt::fuzz {

/// Reads the fuzz input front to back; past the end every read is zero.
class Bytes {
 public:
  Bytes(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  size_t left() const { return empty() ? 0 : size_ - pos_; }
  uint8_t u8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t u16();
  uint64_t u64();
  /// Up to `n` bytes (fewer at the end).
  std::string text(size_t n);

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

/// Writes what Bytes reads (the corpus generator).
class Writer {
 public:
  Writer& u8(uint8_t v) {
    out_.push_back(v);
    return *this;
  }
  Writer& u16(uint16_t v);
  Writer& u64(uint64_t v);
  Writer& text(std::string_view s);
  const std::vector<uint8_t>& bytes() const { return out_; }

 private:
  std::vector<uint8_t> out_;
};

/// Ints one byte names: the edges where size arithmetic overflows, which a
/// fuzzer would hardly reach through 8 raw bytes.
inline constexpr int64_t kBoundaryInts[] = {INT64_MAX, INT64_MIN, int64_t{1} << 32,
                                            int64_t{1} << 48, -(int64_t{1} << 31)};

/// Record tags (tag % 16) of Note [fuzz programs].
enum class Tag : uint8_t {
  Op = 0,
  Free = 7,
  Fetch = 8,
  Sync = 9,
  Scope = 10,
  Collective = 11,
  Configure = 12,
  EndBatch = 13,
  Event = 14,
  RawOp = 15,
};

/// Signal names a Scope record picks from: those of kConfigs, plus one that
/// no config has.
inline constexpr std::string_view kSignalNames[] = {
    "batch", "grads", "params", "weight", "input", "output", "stage0", "stage1", "unit", "nowhere"};

/// Configs a Configure record (and the sharding target's setup) picks from.
/// They name workers 0..2 at most: the sharding target's clusters have 3.
inline constexpr std::string_view kConfigs[] = {
    // data parallel (configs/data_parallel.yaml)
    "params:\n  shard: {replicated: true}\nbatch:\n  shard: {axis: 0}\n  backward: grads\n"
    "grads:\n  shard: {replicated: true}\n",
    // tensor parallel, columns then rows
    "weight:\n  shard: {axis: -1, workers: [0, 1]}\ninput:\n  shard: {replicated: true}\n"
    "output:\n  shard: {axis: 0, workers: [1, 2]}\n",
    // pipeline stages with compile units
    "stage0:\n  shard: {replicated: true, workers: [0]}\n  backward: stage0\n  compile: true\n"
    "stage1:\n  shard: {replicated: true, workers: [1]}\n  backward: stage1\n  compile: true\n"
    "unit:\n  compile: true\n",
    // split along axis 1 of everything the scope creates
    "batch:\n  shard: {axis: 1, workers: [2, 0]}\n  backward: batch\n  compile: true\n",
};

/// One message for a target: instructions plus the data frames their
/// FromData payloads name.
struct Batch {
  uint64_t session = 1;
  std::vector<wire::Instr> instrs;
  std::vector<std::vector<char>> frames;
  /// Set for an Event record instead of instructions.
  bool event = false;
  uint8_t event_arg = 0;
};

/// Decodes a program (Note [fuzz programs]) from `in`, after the mode and
/// setup bytes; at most `max_instrs` instructions in all.
std::vector<Batch> read_program(Bytes& in, size_t max_instrs);

/// A raw message of a raw-mode input: its frames, the header first.
std::vector<std::vector<char>> read_raw_message(Bytes& in);

/// Writes programs for seeds: each call appends one record; ids are
/// `IdRef`s the writer resolves like read_program does.
class ProgramWriter {
 public:
  ProgramWriter(uint8_t mode, uint8_t setup) { w_.u8(mode).u8(setup); }
  /// An op with `outputs` fresh ids; inputs name the k-th most recent id
  /// created (0 = the last one).
  ProgramWriter& op(OpCode code, std::vector<uint8_t> inputs, int outputs,
                    std::vector<int64_t> ints = {}, std::vector<double> floats = {},
                    DType dtype = DType::Float32);
  /// FromData of `shape` with a payload frame of the exact size.
  ProgramWriter& upload(std::vector<int64_t> shape, DType dtype, uint8_t fill);
  ProgramWriter& free(std::vector<uint8_t> inputs);
  ProgramWriter& fetch(uint8_t input, uint8_t request);
  ProgramWriter& sync(uint8_t request);
  ProgramWriter& scope(wire::ScopeAction action, size_t name_index);
  ProgramWriter& collective(uint8_t code, std::vector<uint8_t> inputs, int outputs,
                            std::vector<int64_t> ints, DType dtype);
  ProgramWriter& configure(size_t config_index);
  ProgramWriter& end_batch(uint8_t session_sel);
  ProgramWriter& event(uint8_t arg);
  const std::vector<uint8_t>& bytes() const { return w_.bytes(); }

 private:
  void args(std::vector<uint8_t> inputs, int outputs, const std::vector<int64_t>& ints,
            const std::vector<double>& floats, DType dtype);
  Writer w_;
};

/// Appends a raw message (frames, the header first) to a raw-mode input.
void write_raw_message(Writer& w, std::span<const std::vector<char>> frames);

}  // namespace gt::fuzz

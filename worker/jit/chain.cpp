#include "worker/jit/chain.h"

#include <bit>
#include <charconv>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>

namespace gt::worker::jit {
namespace {

// The digest keys the on-disk cache, so it must not change between builds or
// processes: explicit arithmetic only (no std::hash), every list prefixed by
// its length. Bump kDigestVersion when the recipe changes.
constexpr uint64_t kDigestVersion = 2;

struct Digest {
  uint64_t h = 0x6A09E667F3BCC908ULL ^ kDigestVersion;
  void add(uint64_t v) {
    h ^= v + 0x9E3779B97F4A7C15ULL + (h << 6) + (h >> 2);
    h *= 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 31;
  }
  void add(const TensorMeta& m) {
    add(static_cast<uint64_t>(m.dtype));
    add(m.shape.size());
    for (int64_t d : m.shape) add(static_cast<uint64_t>(d));
  }
};

void put_meta(std::ostringstream& os, const TensorMeta& m) {
  os << to_string(m.dtype) << '(';
  for (size_t i = 0; i < m.shape.size(); ++i) os << (i ? ", " : "") << m.shape[i];
  os << ')';
}

void put_double(std::ostringstream& os, double v) {
  char buf[32];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), v);
  os << std::string_view(buf, ec == std::errc() ? static_cast<size_t>(end - buf) : 0);
}

}  // namespace

bool dynamic_floats(OpCode op) {
  switch (op) {
    case OpCode::AddScalar:
    case OpCode::SubScalar:
    case OpCode::RSubScalar:
    case OpCode::MulScalar:
    case OpCode::DivScalar:
    case OpCode::RDivScalar:
    case OpCode::AddScalarInplace:
    case OpCode::SubScalarInplace:
    case OpCode::MulScalarInplace:
    case OpCode::AddInplace:
    case OpCode::SubInplace:
    case OpCode::AddcmulInplace:
    case OpCode::AddcdivInplace:
      return true;
    default:
      return false;
  }
}

uint64_t Chain::digest() const {
  Digest d;
  d.add(static_cast<uint64_t>(externals));
  d.add(external_metas.size());
  for (const TensorMeta& m : external_metas) d.add(m);
  d.add(ops.size());
  for (const ChainOp& op : ops) {
    d.add(static_cast<uint64_t>(op.op));
    d.add(static_cast<uint64_t>(op.dtype));
    d.add(op.ints.size());
    for (int64_t v : op.ints) d.add(static_cast<uint64_t>(v));
    d.add(op.floats.size());
    if (!dynamic_floats(op.op)) {
      for (double v : op.floats) d.add(std::bit_cast<uint64_t>(v));
    }
    d.add(op.inputs.size());
    for (int32_t v : op.inputs) d.add(static_cast<uint64_t>(static_cast<uint32_t>(v)));
    d.add(op.input_metas.size());
    for (const TensorMeta& m : op.input_metas) d.add(m);
    d.add(op.output_metas.size());
    for (const TensorMeta& m : op.output_metas) d.add(m);
  }
  d.add(escapes.size());
  for (bool e : escapes) d.add(e ? 1 : 0);
  return d.h;
}

uint64_t Chain::structure_digest() const {
  Digest d;
  d.add(0x5354525543545552ULL);  // "STRUCTUR": never equal to a digest() of the same chain
  d.add(static_cast<uint64_t>(externals));
  d.add(ops.size());
  for (const ChainOp& op : ops) {
    d.add(static_cast<uint64_t>(op.op));
    d.add(static_cast<uint64_t>(op.dtype));
    d.add(op.inputs.size());
    for (int32_t v : op.inputs) d.add(static_cast<uint64_t>(static_cast<uint32_t>(v)));
    d.add(op.output_metas.size());
  }
  return d.h;
}

bool Chain::has_dead_values() const {
  for (bool e : escapes) {
    if (!e) return true;
  }
  return false;
}

std::string Chain::describe() const {
  std::ostringstream os;
  int32_t escaping = 0;
  for (bool e : escapes) escaping += e ? 1 : 0;
  os << "chain " << ops.size() << " ops, " << externals << " externals, " << produced()
     << " produced (" << escaping << " escape), digest " << std::hex << digest() << std::dec
     << '\n';
  os << "  externals:";
  for (int32_t v = 0; v < externals; ++v) {
    os << (v ? ", %" : " %") << v << ' ';
    if (static_cast<size_t>(v) < external_metas.size()) put_meta(os, external_metas[v]);
  }
  os << '\n';
  int32_t next = externals;
  for (const ChainOp& op : ops) {
    const OpInfo* info = find_op(static_cast<uint16_t>(op.op));
    os << "  ";
    for (size_t m = 0; m < op.output_metas.size(); ++m) {
      const int32_t v = next + static_cast<int32_t>(m);
      const size_t k = static_cast<size_t>(v - externals);
      os << (m ? ", %" : "%") << v << (k < escapes.size() && escapes[k] ? "*" : "");
    }
    if (!op.output_metas.empty()) os << " = ";
    if (info) {
      os << info->name;
    } else {
      os << "op" << static_cast<int>(op.op);
    }
    os << '(';
    for (size_t k = 0; k < op.inputs.size(); ++k) os << (k ? ", %" : "%") << op.inputs[k];
    os << ')';
    if (!op.ints.empty()) {
      os << " ints=[";
      for (size_t k = 0; k < op.ints.size(); ++k) os << (k ? "," : "") << op.ints[k];
      os << ']';
    }
    if (!op.floats.empty()) {
      os << " floats=[";
      for (size_t k = 0; k < op.floats.size(); ++k) {
        if (k) os << ',';
        put_double(os, op.floats[k]);
      }
      os << ']';
    }
    if (info && (info->kind == OpKind::Creation || op.op == OpCode::To)) {
      os << " dtype=" << to_string(op.dtype);
    }
    if (!op.output_metas.empty()) {
      os << " ->";
      for (const TensorMeta& m : op.output_metas) {
        os << ' ';
        put_meta(os, m);
      }
    } else if (info && info->kind == OpKind::Inplace && !op.inputs.empty()) {
      os << " (writes %" << op.inputs[0] << ')';
    }
    os << '\n';
    next += static_cast<int32_t>(op.output_metas.size());
  }
  if (!ops.empty()) os << "  (* escapes)\n";
  return os.str();
}

Chain without_uploads(const Chain& chain) {
  // New numbering: old externals keep theirs, upload outputs follow them, the
  // other produced values come after, in order.
  std::vector<int32_t> renumber(static_cast<size_t>(chain.externals) + chain.escapes.size());
  for (int32_t v = 0; v < chain.externals; ++v) renumber[v] = v;
  Chain out;
  out.externals = chain.externals;
  out.external_metas = chain.external_metas;
  int32_t produced = chain.externals;  // next old produced value number
  for (const ChainOp& op : chain.ops) {
    if (op.op != OpCode::FromData) {
      produced += static_cast<int32_t>(op.output_metas.size());
      continue;
    }
    for (const TensorMeta& m : op.output_metas) {
      renumber[produced++] = out.externals++;
      out.external_metas.push_back(m);
    }
  }
  if (out.externals == chain.externals) return chain;
  int32_t next = out.externals;
  produced = chain.externals;
  for (const ChainOp& op : chain.ops) {
    if (op.op == OpCode::FromData) {
      produced += static_cast<int32_t>(op.output_metas.size());
      continue;
    }
    ChainOp copy = op;
    for (int32_t& v : copy.inputs) v = renumber[v];
    for (size_t k = 0; k < op.output_metas.size(); ++k) {
      renumber[produced] = next++;
      out.escapes.push_back(chain.escapes[produced - chain.externals]);
      ++produced;
    }
    out.ops.push_back(std::move(copy));
  }
  return out;
}

}  // namespace gt::worker::jit

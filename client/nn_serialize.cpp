// gt::save / gt::load: a module's parameters in a small binary file (the
// format is documented with gt::save in gt/nn.h).

#include <bit>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>

#include <gt/autograd.h>
#include <gt/error.h>
#include <gt/nn.h>

#include "client/internal/format.h"
#include "client/internal/session.h"
#include "client/internal/tensor_node.h"
#include "common/check.h"
#include "common/shape.h"

namespace gt {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the parameter file and the wire are little-endian");

constexpr char kMagic[8] = {'G', 'T', 'P', 'A', 'R', 'A', 'M', '1'};

template <typename T>
void put(std::string& out, T value) {
  out.append(reinterpret_cast<const char*>(&value), sizeof(T));
}

struct Entry {
  std::string name;
  DType dtype = DType::Float32;
  Shape shape;
  std::string bytes;
};

// Reads the file's entries; every size is checked against what is left.
class Reader {
 public:
  Reader(std::string data, std::string path) : data_(std::move(data)), path_(std::move(path)) {}

  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, data_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return value;
  }
  std::string bytes(uint64_t n, const char* what) {
    need(n, what);
    std::string s = data_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  bool at_end() const { return pos_ == data_.size(); }
  [[noreturn]] void fail(const std::string& what) const {
    throw Error(detail::cat("[nn.load] ", path_, ": ", what, " (at byte ", pos_, ")"));
  }

 private:
  void need(uint64_t n, const char* what) const {
    if (n > data_.size() - pos_) fail(detail::cat("file ends inside ", what));
  }
  std::string data_;
  std::string path_;
  size_t pos_ = 0;
};

std::vector<Entry> read_entries(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("[nn.load] cannot open " + path + " for reading");
  Reader r(std::string(std::istreambuf_iterator<char>(in), {}), path);
  const std::string magic = r.bytes(sizeof(kMagic), "the header");
  if (std::memcmp(magic.data(), kMagic, sizeof(kMagic)) != 0) {
    r.fail("not a gt parameter file (expected the header GTPARAM1)");
  }
  const uint32_t count = r.get<uint32_t>("the parameter count");
  std::vector<Entry> entries;
  for (uint32_t i = 0; i < count; ++i) {
    Entry e;
    const uint32_t name_len = r.get<uint32_t>("a name length");
    e.name = r.bytes(name_len, "a name");
    const uint8_t dtype = r.get<uint8_t>("a dtype");
    if (dtype >= kNumDTypes) r.fail(detail::cat("parameter ", e.name, ": bad dtype ", +dtype));
    e.dtype = static_cast<DType>(dtype);
    const uint8_t rank = r.get<uint8_t>("a rank");
    if (rank > kMaxRank) r.fail(detail::cat("parameter ", e.name, ": rank ", +rank, " too large"));
    for (uint8_t d = 0; d < rank; ++d) {
      const int64_t extent = r.get<int64_t>("the extents");
      if (extent < 0) r.fail(detail::cat("parameter ", e.name, ": negative extent ", extent));
      e.shape.push_back(extent);
    }
    int64_t n = 0;
    try {
      n = checked_numel(e.shape);
    } catch (const std::invalid_argument& ex) {
      r.fail(detail::cat("parameter ", e.name, ": ", ex.what()));
    }
    const uint64_t nbytes = r.get<uint64_t>("a byte count");
    if (nbytes != static_cast<uint64_t>(n * element_size(e.dtype))) {
      r.fail(detail::cat("parameter ", e.name, ": ", nbytes, " bytes for ", shape_str(e.shape),
                         " ", to_string(e.dtype)));
    }
    e.bytes = r.bytes(nbytes, "the data");
    entries.push_back(std::move(e));
  }
  if (!r.at_end()) r.fail("unexpected bytes after the last parameter");
  return entries;
}

// A gt tensor holding an entry's elements with the entry's dtype (float16
// and bfloat16 travel as float32, exactly, and are cast by copy_).
Tensor upload(const Entry& e) {
  const int64_t n = numel(e.shape);
  auto typed = [&](auto zero) {
    using T = decltype(zero);
    std::vector<T> v(n);
    std::memcpy(v.data(), e.bytes.data(), e.bytes.size());
    return gt::tensor(std::move(v), e.shape);
  };
  switch (e.dtype) {
    case DType::Float32: return typed(float{});
    case DType::Float64: return typed(double{});
    case DType::Int32: return typed(int32_t{});
    case DType::Int64: return typed(int64_t{});
    case DType::Bool: {
      std::vector<bool> v(n);
      for (int64_t i = 0; i < n; ++i) v[i] = e.bytes[i] != 0;
      return gt::tensor(std::move(v), e.shape);
    }
    case DType::Float16:
    case DType::BFloat16:
      return gt::tensor(client::convert_elements<float>(e.bytes.data(), n, e.dtype), e.shape);
  }
  return Tensor();
}

}  // namespace

void save(const nn::Module& module, const std::string& path) {
  const auto params = module.named_parameters();
  std::string out(kMagic, sizeof(kMagic));
  put<uint32_t>(out, static_cast<uint32_t>(params.size()));
  for (const auto& [name, p] : params) {
    const client::TensorNode& n = *p.node();
    client::FetchResult r = n.session()->fetch(n.id());
    put<uint32_t>(out, static_cast<uint32_t>(name.size()));
    out += name;
    put<uint8_t>(out, static_cast<uint8_t>(r.dtype));
    put<uint8_t>(out, static_cast<uint8_t>(r.shape.size()));
    for (int64_t extent : r.shape) put<int64_t>(out, extent);
    put<uint64_t>(out, r.data.size());
    out.append(static_cast<const char*>(r.data.data()), r.data.size());
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) throw Error("[nn.save] cannot open " + path + " for writing");
  f.write(out.data(), static_cast<std::streamsize>(out.size()));
  f.close();
  if (!f) throw Error("[nn.save] writing " + path + " failed");
}

void load(nn::Module& module, const std::string& path) {
  const std::vector<Entry> entries = read_entries(path);
  std::map<std::string, const Entry*> by_name;
  for (const Entry& e : entries) {
    if (!by_name.emplace(e.name, &e).second) {
      throw Error(detail::cat("[nn.load] ", path, ": parameter ", e.name, " appears twice"));
    }
  }
  const auto params = module.named_parameters();
  // Validate everything before touching the module, so that a bad file
  // leaves it unchanged.
  for (const auto& [name, p] : params) {
    auto it = by_name.find(name);
    if (it == by_name.end()) {
      throw Error(detail::cat("[nn.load] ", path, ": parameter ", name, " (",
                              shape_str(p.shape()), " ", to_string(p.dtype()),
                              ") of the module is missing from the file"));
    }
    const Entry& e = *it->second;
    if (e.shape != p.shape() || e.dtype != p.dtype()) {
      throw Error(detail::cat("[nn.load] ", path, ": parameter ", name, " is ",
                              shape_str(e.shape), " ", to_string(e.dtype), " in the file, but the "
                              "module expects ", shape_str(p.shape()), " ",
                              to_string(p.dtype())));
    }
  }
  if (entries.size() != params.size()) {
    for (const Entry& e : entries) {
      bool known = false;
      for (const auto& [name, _] : params) known |= name == e.name;
      if (!known) {
        throw Error(detail::cat("[nn.load] ", path, ": the file has parameter ", e.name,
                                ", which the module (", module.name(), ") does not have"));
      }
    }
  }
  NoGradGuard no_grad;
  for (const auto& [name, p] : params) {
    Tensor dst = p;
    dst.copy_(upload(*by_name.at(name)));
  }
}

}  // namespace gt

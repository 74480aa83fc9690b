// gt::data: IDX parsing (gzip or raw), Fashion-MNIST, and the DataLoader.

#include <gt/data.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <mutex>

#include <zlib.h>

#include <gt/error.h>

#include "common/check.h"
#include "common/env.h"

namespace gt::data {
namespace {

constexpr const char* kDefaultFashionMnistDir = "/usr/share/datasets/fashion-mnist";
constexpr const char* kInstallHint =
    "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) "
    "or set GT_DATA_DIR";
// IDX element type codes (third magic byte); gt reads only unsigned bytes.
constexpr uint8_t kIdxUnsignedByte = 0x08;
// Largest element count a header may claim (well above any IDX data set);
// bigger claims are corrupt headers, refused before any allocation.
constexpr int64_t kIdxMaxElements = int64_t{1} << 40;
constexpr int64_t kReadChunkBytes = int64_t{1} << 20;

std::string shape_string(const std::vector<int64_t>& dims) {
  std::string s = "(";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + ")";
}

std::string hex32(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "0x%08x", v);
  return buf;
}

// An open gzip (or, transparently, raw) file; zlib reads both through gzread.
class GzFile {
 public:
  explicit GzFile(const std::string& path) : path_(path), file_(gzopen(path.c_str(), "rb")) {
    if (!file_) {
      const int err = errno;
      throw Error(detail::cat("[data.read_idx] cannot open ", path_, ": ",
                              err ? std::strerror(err) : "out of memory"));
    }
    gzbuffer(file_, 256 * 1024);
  }
  ~GzFile() { gzclose(file_); }
  GzFile(const GzFile&) = delete;
  GzFile& operator=(const GzFile&) = delete;

  // Reads up to n bytes; fewer only at the end of the data. A damaged gzip
  // stream (bad CRC, bad deflate data) throws; a cut one reads short.
  int64_t read(void* out, int64_t n) {
    int64_t got = 0;
    auto* p = static_cast<uint8_t*>(out);
    while (got < n) {
      const auto want = static_cast<unsigned>(std::min<int64_t>(n - got, kReadChunkBytes));
      const int r = gzread(file_, p + got, want);
      if (r < 0) {
        int code = 0;
        const char* msg = gzerror(file_, &code);
        throw Error(detail::cat("[data.read_idx] ", path_, ": corrupt gzip data: ",
                                msg ? msg : "unknown zlib error"));
      }
      if (r == 0) break;
      got += r;
    }
    return got;
  }

  // Throws when the data ended because the gzip stream was cut: zlib reports
  // that as a soft Z_BUF_ERROR after returning everything it could decode,
  // so a stream missing only its trailer (CRC, length) would otherwise pass.
  void check_not_cut() {
    int code = Z_OK;
    const char* msg = gzerror(file_, &code);
    if (code == Z_BUF_ERROR) {
      throw Error(detail::cat("[data.read_idx] ", path_, ": truncated gzip stream (",
                              msg ? msg : "unexpected end of file",
                              "): expected a complete gzip member"));
    }
  }

 private:
  std::string path_;
  gzFile file_;
};

uint32_t big_endian32(const uint8_t* b) {
  return (uint32_t{b[0]} << 24) | (uint32_t{b[1]} << 16) | (uint32_t{b[2]} << 8) | uint32_t{b[3]};
}

// Unbiased draw in [0, n) from 64-bit engine output by rejection (the
// OpenBSD arc4random_uniform scheme); defined here so that a seed gives the
// same order with every standard library.
uint64_t draw_below(std::mt19937_64& rng, uint64_t n) {
  const uint64_t threshold = (uint64_t{0} - n) % n;  // 2^64 mod n
  for (;;) {
    const uint64_t x = rng();
    if (x >= threshold) return x % n;
  }
}

// Where a Fashion-MNIST file lives: NAME.gz, else NAME; missing throws with
// the install hint.
std::string find_file(const std::string& root, const std::string& name) {
  namespace fs = std::filesystem;
  const fs::path gz = fs::path(root) / (name + ".gz");
  const fs::path raw = fs::path(root) / name;
  std::error_code ec;
  if (fs::is_regular_file(gz, ec)) return gz.string();
  if (fs::is_regular_file(raw, ec)) return raw.string();
  throw Error(detail::cat("[data.load_fashion_mnist] missing ", gz.string(), " (nor is ", name,
                          " there uncompressed): ", kInstallHint));
}

}  // namespace

IdxArray read_idx(const std::string& path, int expected_dims) {
  GT_CHECK(expected_dims >= 1 && expected_dims <= 255,
           "[data.read_idx] expected_dims must be in [1, 255], got ", expected_dims);
  GzFile file(path);
  const uint32_t want_magic = (uint32_t{kIdxUnsignedByte} << 8) | uint32_t(expected_dims);
  const std::string want = detail::cat("magic ", hex32(want_magic), " (IDX of unsigned bytes with ",
                                       expected_dims, expected_dims == 1 ? " dim)" : " dims)");

  std::array<uint8_t, 4> head{};
  const int64_t got_head = file.read(head.data(), 4);
  if (got_head < 4) {
    throw Error(detail::cat("[data.read_idx] ", path, ": truncated: expected a 4-byte ", want,
                            ", got ", got_head, " bytes"));
  }
  const uint32_t magic = big_endian32(head.data());
  if (magic != want_magic) {
    throw Error(detail::cat("[data.read_idx] ", path, ": bad magic ", hex32(magic), ": expected ",
                            want));
  }

  IdxArray out;
  std::vector<uint8_t> dim_bytes(4 * size_t(expected_dims));
  const int64_t got_dims = file.read(dim_bytes.data(), int64_t(dim_bytes.size()));
  if (got_dims < int64_t(dim_bytes.size())) {
    throw Error(detail::cat("[data.read_idx] ", path, ": truncated header: expected ",
                            dim_bytes.size(), " bytes of dims, got ", got_dims));
  }
  int64_t elements = 1;
  for (int d = 0; d < expected_dims; ++d) {
    const int64_t extent = big_endian32(dim_bytes.data() + 4 * d);
    out.dims.push_back(extent);
    if (extent != 0 && elements > kIdxMaxElements / extent) {
      throw Error(detail::cat("[data.read_idx] ", path, ": implausible dims ",
                              shape_string(out.dims), "...: expected at most ", kIdxMaxElements,
                              " elements"));
    }
    elements *= extent;
  }

  // Grow as data arrives, so that a corrupt header claiming a huge size
  // fails as truncated instead of allocating it.
  out.data.reserve(size_t(std::min<int64_t>(elements, int64_t{1} << 28)));
  while (int64_t(out.data.size()) < elements) {
    const int64_t have = int64_t(out.data.size());
    const int64_t step = std::min(elements - have, kReadChunkBytes * 16);
    out.data.resize(size_t(have + step));
    const int64_t got = file.read(out.data.data() + have, step);
    if (got < step) {
      throw Error(detail::cat("[data.read_idx] ", path, ": truncated: expected ", elements,
                              " bytes of data for dims ", shape_string(out.dims), ", got ",
                              have + got));
    }
  }
  uint8_t extra = 0;
  const int64_t extra_bytes = file.read(&extra, 1);
  file.check_not_cut();
  if (extra_bytes != 0) {
    throw Error(detail::cat("[data.read_idx] ", path, ": trailing bytes after the ", elements,
                            " bytes of data: expected the file to end (dims ",
                            shape_string(out.dims), ")"));
  }
  return out;
}

std::string default_fashion_mnist_dir() {
  if (auto dir = env_string("GT_DATA_DIR")) return *dir;
  return kDefaultFashionMnistDir;
}

Dataset load_fashion_mnist(bool train, const std::string& root) {
  const std::string dir = root.empty() ? default_fashion_mnist_dir() : root;
  const std::string prefix = train ? "train" : "t10k";
  // Both paths first, so that a missing package is reported before any read.
  const std::string images_path = find_file(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = find_file(dir, prefix + "-labels-idx1-ubyte");

  IdxArray images = read_idx(images_path, 3);
  IdxArray labels = read_idx(labels_path, 1);
  if (images.dims[0] != labels.dims[0]) {
    throw Error(detail::cat("[data.load_fashion_mnist] ", images_path, " holds ", images.dims[0],
                            " images but ", labels_path, " holds ", labels.dims[0],
                            " labels: expected equal counts"));
  }
  if (images.dims[1] == 0 || images.dims[2] == 0) {
    throw Error(detail::cat("[data.load_fashion_mnist] ", images_path, ": image size ",
                            images.dims[1], "x", images.dims[2], ": expected non-empty images"));
  }

  Dataset ds;
  ds.size = images.dims[0];
  ds.rows = images.dims[1];
  ds.cols = images.dims[2];

  ds.labels.resize(labels.data.size());
  for (size_t i = 0; i < labels.data.size(); ++i) {
    const uint8_t label = labels.data[i];
    if (label > 9) {
      throw Error(detail::cat("[data.load_fashion_mnist] ", labels_path, ": label ", int(label),
                              " of sample ", i, ": expected a class in 0..9"));
    }
    ds.labels[i] = label;
  }

  std::array<float, 256> lut{};
  for (int v = 0; v < 256; ++v) {
    lut[size_t(v)] = (float(v) / 255.0f - kFashionMnistMean) / kFashionMnistStd;
  }
  ds.images.resize(images.data.size());
  std::transform(images.data.begin(), images.data.end(), ds.images.begin(),
                 [&](uint8_t v) { return lut[v]; });
  return ds;
}

int64_t batch_count(int64_t size, int64_t batch_size, bool drop_last) {
  GT_CHECK(size >= 0, "[data.batch_count] size must be >= 0, got ", size);
  GT_CHECK(batch_size >= 1, "[data.batch_count] batch_size must be >= 1, got ", batch_size);
  return drop_last ? size / batch_size : (size + batch_size - 1) / batch_size;
}

std::vector<int64_t> epoch_order(int64_t size, bool shuffle, std::mt19937_64& rng) {
  GT_CHECK(size >= 0, "[data.epoch_order] size must be >= 0, got ", size);
  std::vector<int64_t> order(static_cast<size_t>(size));
  for (int64_t i = 0; i < size; ++i) order[size_t(i)] = i;
  if (!shuffle) return order;
  for (int64_t i = size - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(draw_below(rng, uint64_t(i) + 1));
    std::swap(order[size_t(i)], order[size_t(j)]);
  }
  return order;
}

void gather(const Dataset& dataset, std::span<const int64_t> indices, std::vector<float>& images,
            std::vector<int64_t>& labels) {
  const int64_t numel = dataset.image_numel();
  GT_CHECK(int64_t(dataset.images.size()) == dataset.size * numel &&
               int64_t(dataset.labels.size()) == dataset.size,
           "[data.gather] inconsistent dataset: size ", dataset.size, ", ", dataset.rows, "x",
           dataset.cols, " images, but ", dataset.images.size(), " pixels and ",
           dataset.labels.size(), " labels");
  images.resize(indices.size() * size_t(numel));
  labels.resize(indices.size());
  for (size_t k = 0; k < indices.size(); ++k) {
    const int64_t i = indices[k];
    GT_CHECK(i >= 0 && i < dataset.size, "[data.gather] index ", i,
             " is out of range: expected [0, ", dataset.size, ")");
    std::copy_n(dataset.images.begin() + i * numel, numel, images.begin() + int64_t(k) * numel);
    labels[k] = dataset.labels[size_t(i)];
  }
}

// ---- DataLoader ----

// The dataset uploaded to the cluster (resident loaders), created on the
// first batch so that building a loader needs no session.
struct ResidentData {
  std::mutex mutex;
  Tensor images;  // [size, rows * cols] float32; guarded by mutex until set
  Tensor labels;  // [size] int64
};

struct DataLoader::State {
  std::mt19937_64 rng;  // the shuffling stream, one draw sequence per loader
  int64_t epochs = 0;
  std::shared_ptr<ResidentData> resident;  // null unless options.resident()
};

// One epoch's fixed order, shared by its iterators.
struct DataLoader::iterator::Epoch {
  std::shared_ptr<const Dataset> dataset;
  std::vector<int64_t> order;
  int64_t batch_size = 1;
  int64_t batches = 0;
  std::shared_ptr<ResidentData> resident;
};

DataLoader::iterator::iterator(std::shared_ptr<const Epoch> epoch, int64_t index)
    : epoch_(std::move(epoch)), index_(index) {}

const Batch& DataLoader::iterator::operator*() const {
  if (batch_) return *batch_;
  GT_CHECK(epoch_ && index_ >= 0 && index_ < epoch_->batches,
           "[data.DataLoader] dereferenced an iterator that is not on a batch (index ", index_,
           ")");
  const Epoch& e = *epoch_;
  const int64_t start = index_ * e.batch_size;
  const int64_t stop = std::min<int64_t>(start + e.batch_size, int64_t(e.order.size()));
  const int64_t b = stop - start;
  const auto indices = std::span<const int64_t>(e.order).subspan(size_t(start), size_t(b));
  if (e.resident) {
    ResidentData& r = *e.resident;
    {
      std::lock_guard lock(r.mutex);
      if (!r.images.defined()) {
        const Dataset& d = *e.dataset;
        r.images = gt::tensor(d.images, {d.size, d.image_numel()});
        r.labels = gt::tensor(d.labels, {d.size});
      }
    }
    const Tensor idx = gt::tensor(std::vector<int64_t>(indices.begin(), indices.end()), {b});
    batch_ = Batch{r.images.index_select(0, idx), r.labels.index_select(0, idx)};
    return *batch_;
  }
  std::vector<float> images;
  std::vector<int64_t> labels;
  gather(*e.dataset, indices, images, labels);
  batch_ = Batch{gt::tensor(std::move(images), {b, e.dataset->image_numel()}),
                 gt::tensor(std::move(labels), {b})};
  return *batch_;
}

DataLoader::iterator& DataLoader::iterator::operator++() {
  ++index_;
  batch_.reset();
  return *this;
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options)
    : dataset_(std::move(dataset)), options_(options), state_(std::make_shared<State>()) {
  GT_CHECK(dataset_ != nullptr, "[data.DataLoader] the dataset is null");
  GT_CHECK(options_.batch_size() >= 1, "[data.DataLoader] batch_size must be >= 1, got ",
           options_.batch_size());
  GT_CHECK(dataset_->size >= 0 && int64_t(dataset_->labels.size()) == dataset_->size &&
               int64_t(dataset_->images.size()) == dataset_->size * dataset_->image_numel(),
           "[data.DataLoader] inconsistent dataset: size ", dataset_->size, ", ",
           dataset_->rows, "x", dataset_->cols, " images, but ", dataset_->images.size(),
           " pixels and ", dataset_->labels.size(), " labels");
  state_->rng.seed(options_.seed());
}

DataLoader::DataLoader(Dataset dataset, DataLoaderOptions options)
    : DataLoader(std::make_shared<const Dataset>(std::move(dataset)), options) {}

DataLoader::iterator DataLoader::begin() {
  auto epoch = std::make_shared<iterator::Epoch>();
  epoch->dataset = dataset_;
  epoch->order = epoch_order(dataset_->size, options_.shuffle(), state_->rng);
  epoch->batch_size = options_.batch_size();
  epoch->batches = size();
  if (options_.resident()) {
    if (!state_->resident) state_->resident = std::make_shared<ResidentData>();
    epoch->resident = state_->resident;
  }
  ++state_->epochs;
  return iterator(std::move(epoch), 0);
}

DataLoader::iterator DataLoader::end() const { return iterator(nullptr, size()); }

int64_t DataLoader::size() const {
  return batch_count(dataset_->size, options_.batch_size(), options_.drop_last());
}

int64_t DataLoader::epochs() const { return state_->epochs; }

}  // namespace gt::data

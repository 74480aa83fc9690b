#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <string>

#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>

#include <gt/gt.h>

#include "client/internal/api.h"
#include "fake_dispatcher.h"
#include "common/env.h"
#include "tests/support/temp_dir.h"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using gt::data::Dataset;
using gt::data::DataLoader;
using gt::data::DataLoaderOptions;

using gt::ScopedEnv;

namespace {

using gt::test::TempDir;

void put32(std::vector<uint8_t>& out, uint32_t v) {
  out.push_back(uint8_t(v >> 24));
  out.push_back(uint8_t(v >> 16));
  out.push_back(uint8_t(v >> 8));
  out.push_back(uint8_t(v));
}

// The bytes of an unsigned-byte IDX file with `dims` holding `data`.
std::vector<uint8_t> idx_bytes(const std::vector<uint32_t>& dims, const std::vector<uint8_t>& data,
                               uint32_t magic = 0) {
  std::vector<uint8_t> out;
  put32(out, magic ? magic : 0x0800u | uint32_t(dims.size()));
  for (uint32_t d : dims) put32(out, d);
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

void write_raw(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  REQUIRE(f.good());
}

void write_gz(const std::string& path, const std::vector<uint8_t>& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  REQUIRE(f != nullptr);
  REQUIRE(gzwrite(f, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(f) == Z_OK);
}

std::vector<uint8_t> pattern(size_t n, uint8_t mul = 37) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(i * mul + 11);
  return v;
}

// A Fashion-MNIST-shaped split with n images of rows x cols in `dir`.
void write_split(const TempDir& dir, const std::string& prefix, uint32_t n, uint32_t rows,
                 uint32_t cols, bool gz) {
  auto images = idx_bytes({n, rows, cols}, pattern(size_t(n) * rows * cols));
  std::vector<uint8_t> labels(n);
  for (uint32_t i = 0; i < n; ++i) labels[i] = uint8_t(i % 10);
  auto label_file = idx_bytes({n}, labels);
  if (gz) {
    write_gz(dir.file(prefix + "-images-idx3-ubyte.gz"), images);
    write_gz(dir.file(prefix + "-labels-idx1-ubyte.gz"), label_file);
  } else {
    write_raw(dir.file(prefix + "-images-idx3-ubyte"), images);
    write_raw(dir.file(prefix + "-labels-idx1-ubyte"), label_file);
  }
}

float normalised(uint8_t v) {
  return (float(v) / 255.0f - gt::data::kFashionMnistMean) / gt::data::kFashionMnistStd;
}


}  // namespace

// ---- IDX parsing ----

TEST_CASE("read_idx parses raw and gzip-compressed IDX files", "[data][unit]") {
  TempDir dir;
  const auto data = pattern(2 * 3 * 4);
  const auto bytes = idx_bytes({2, 3, 4}, data);
  write_raw(dir.file("a.idx"), bytes);
  write_gz(dir.file("a.idx.gz"), bytes);
  for (const auto& name : {"a.idx", "a.idx.gz"}) {
    INFO(name);
    auto idx = gt::data::read_idx(dir.file(name), 3);
    CHECK(idx.dims == std::vector<int64_t>{2, 3, 4});
    CHECK(idx.data == data);
  }
  write_gz(dir.file("labels.gz"), idx_bytes({5}, {0, 1, 2, 3, 9}));
  auto labels = gt::data::read_idx(dir.file("labels.gz"), 1);
  CHECK(labels.dims == std::vector<int64_t>{5});
  CHECK(labels.data == std::vector<uint8_t>{0, 1, 2, 3, 9});
}

TEST_CASE("read_idx rejects a bad magic naming the file and the expected magic",
          "[data][unit]") {
  TempDir dir;
  const auto path = dir.file("labels.idx");
  // An image file's magic where a label file's is expected.
  write_raw(path, idx_bytes({1, 1, 1}, {7}));
  CHECK_THROWS_AS(gt::data::read_idx(path, 1), gt::Error);
  CHECK_THROWS_WITH(gt::data::read_idx(path, 1),
                    Catch::Contains(path) && Catch::Contains("bad magic 0x00000803") &&
                        Catch::Contains("expected magic 0x00000801") &&
                        Catch::Contains("unsigned bytes with 1 dim"));
  // Not an IDX file at all (float element type, then text).
  write_gz(path + ".gz", idx_bytes({1}, {0}, 0x00000d01u));
  CHECK_THROWS_WITH(gt::data::read_idx(path + ".gz", 1),
                    Catch::Contains(path + ".gz") && Catch::Contains("bad magic 0x00000d01"));
  write_raw(path, {'h', 'e', 'l', 'l', 'o'});
  CHECK_THROWS_WITH(gt::data::read_idx(path, 1), Catch::Contains("bad magic 0x68656c6c"));
}

TEST_CASE("read_idx rejects truncated files with what was expected", "[data][unit]") {
  TempDir dir;
  const auto full = idx_bytes({4, 2, 2}, pattern(16));

  SECTION("short data, raw and gz") {
    std::vector<uint8_t> cut(full.begin(), full.end() - 5);
    write_raw(dir.file("cut.idx"), cut);
    write_gz(dir.file("cut.idx.gz"), cut);
    for (const auto& name : {"cut.idx", "cut.idx.gz"}) {
      INFO(name);
      CHECK_THROWS_AS(gt::data::read_idx(dir.file(name), 3), gt::Error);
      CHECK_THROWS_WITH(gt::data::read_idx(dir.file(name), 3),
                        Catch::Contains(dir.file(name)) && Catch::Contains("truncated") &&
                            Catch::Contains("expected 16 bytes of data for dims (4, 2, 2)") &&
                            Catch::Contains("got 11"));
    }
  }
  SECTION("short header") {
    write_raw(dir.file("head.idx"), std::vector<uint8_t>(full.begin(), full.begin() + 10));
    CHECK_THROWS_WITH(gt::data::read_idx(dir.file("head.idx"), 3),
                      Catch::Contains("truncated header: expected 12 bytes of dims, got 6"));
    write_raw(dir.file("empty.idx"), {});
    CHECK_THROWS_WITH(gt::data::read_idx(dir.file("empty.idx"), 3),
                      Catch::Contains(dir.file("empty.idx")) &&
                          Catch::Contains("truncated: expected a 4-byte magic 0x00000803"));
  }
  SECTION("a cut gzip stream") {
    write_gz(dir.file("whole.gz"), full);
    std::ifstream in(dir.file("whole.gz"), std::ios::binary);
    std::vector<char> gz((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    REQUIRE(gz.size() > 12);
    write_raw(dir.file("cutstream.gz"), std::vector<uint8_t>(gz.begin(), gz.end() - 6));
    CHECK_THROWS_AS(gt::data::read_idx(dir.file("cutstream.gz"), 3), gt::Error);
    CHECK_THROWS_WITH(gt::data::read_idx(dir.file("cutstream.gz"), 3),
                      Catch::Contains(dir.file("cutstream.gz")));
  }
  SECTION("trailing bytes") {
    auto longer = full;
    longer.push_back(0);
    write_raw(dir.file("long.idx"), longer);
    CHECK_THROWS_WITH(gt::data::read_idx(dir.file("long.idx"), 3),
                      Catch::Contains("trailing bytes after the 16 bytes of data"));
  }
  SECTION("a header claiming an absurd size") {
    write_raw(dir.file("huge.idx"), idx_bytes({0xffffffffu, 0xffffffffu, 2}, {}));
    CHECK_THROWS_WITH(gt::data::read_idx(dir.file("huge.idx"), 3),
                      Catch::Contains("implausible dims"));
    write_raw(dir.file("big.idx"), idx_bytes({1000000, 28, 28}, pattern(100)));
    CHECK_THROWS_WITH(gt::data::read_idx(dir.file("big.idx"), 3),
                      Catch::Contains("expected 784000000 bytes") && Catch::Contains("got 100"));
  }
}

TEST_CASE("read_idx names the path it cannot open", "[data][unit]") {
  TempDir dir;
  CHECK_THROWS_AS(gt::data::read_idx(dir.file("nope.gz"), 1), gt::Error);
  CHECK_THROWS_WITH(gt::data::read_idx(dir.file("nope.gz"), 1),
                    Catch::Contains("cannot open " + dir.file("nope.gz")));
  CHECK_THROWS_AS(gt::data::read_idx(dir.file("nope.gz"), 0), std::invalid_argument);
}

// ---- Fashion-MNIST ----

TEST_CASE("load_fashion_mnist reads gz or raw splits and normalises", "[data][unit]") {
  TempDir dir;
  write_split(dir, "train", 12, 3, 2, /*gz=*/true);
  write_split(dir, "t10k", 5, 3, 2, /*gz=*/false);

  const Dataset train = gt::data::load_fashion_mnist(true, dir.path.string());
  CHECK(train.size == 12);
  CHECK(train.rows == 3);
  CHECK(train.cols == 2);
  CHECK(train.image_numel() == 6);
  REQUIRE(train.images.size() == 12 * 6);
  REQUIRE(train.labels.size() == 12);
  const auto pixels = pattern(12 * 6);
  for (size_t i = 0; i < pixels.size(); ++i) {
    REQUIRE(train.images[i] == Approx(normalised(pixels[i])));
  }
  for (int64_t i = 0; i < 12; ++i) CHECK(train.labels[size_t(i)] == i % 10);
  CHECK(train.images[0] == Approx((11.0f / 255.0f - 0.2860f) / 0.3530f));

  const Dataset test = gt::data::load_fashion_mnist(false, dir.path.string());
  CHECK(test.size == 5);
  CHECK(test.labels == std::vector<int64_t>{0, 1, 2, 3, 4});
}

TEST_CASE("load_fashion_mnist prefers the .gz file when both exist", "[data][unit]") {
  TempDir dir;
  write_split(dir, "train", 4, 1, 1, /*gz=*/true);
  write_raw(dir.file("train-images-idx3-ubyte"), {'b', 'a', 'd', '!'});
  CHECK(gt::data::load_fashion_mnist(true, dir.path.string()).size == 4);
}

TEST_CASE("load_fashion_mnist names the missing file and how to install it", "[data][unit]") {
  TempDir dir;
  const std::string hint =
      "install Debian's dataset-fashion-mnist package (apt-get install dataset-fashion-mnist) or "
      "set GT_DATA_DIR";
  CHECK_THROWS_AS(gt::data::load_fashion_mnist(true, dir.path.string()), gt::Error);
  CHECK_THROWS_WITH(gt::data::load_fashion_mnist(true, dir.path.string()),
                    Catch::Contains(dir.file("train-images-idx3-ubyte.gz")) &&
                        Catch::Contains(hint));

  // Images present, labels missing: the labels' path is named.
  write_split(dir, "t10k", 3, 2, 2, /*gz=*/true);
  fs::remove(dir.path / "t10k-labels-idx1-ubyte.gz");
  CHECK_THROWS_WITH(gt::data::load_fashion_mnist(false, dir.path.string()),
                    Catch::Contains(dir.file("t10k-labels-idx1-ubyte.gz")) &&
                        Catch::Contains(hint));

  // The default root comes from GT_DATA_DIR.
  ScopedEnv env("GT_DATA_DIR", (dir.path / "elsewhere").string());
  CHECK(gt::data::default_fashion_mnist_dir() == (dir.path / "elsewhere").string());
  CHECK_THROWS_WITH(gt::data::load_fashion_mnist(true),
                    Catch::Contains((dir.path / "elsewhere" / "train-images-idx3-ubyte.gz")
                                        .string()));
}

TEST_CASE("default_fashion_mnist_dir is Debian's without GT_DATA_DIR", "[data][unit]") {
  ScopedEnv env("GT_DATA_DIR", std::nullopt);
  CHECK(gt::data::default_fashion_mnist_dir() == "/usr/share/datasets/fashion-mnist");
}

TEST_CASE("load_fashion_mnist rejects files that disagree or hold bad labels", "[data][unit]") {
  TempDir dir;
  write_raw(dir.file("train-images-idx3-ubyte"), idx_bytes({3, 2, 2}, pattern(12)));
  SECTION("counts differ") {
    write_raw(dir.file("train-labels-idx1-ubyte"), idx_bytes({4}, {1, 2, 3, 4}));
    CHECK_THROWS_AS(gt::data::load_fashion_mnist(true, dir.path.string()), gt::Error);
    CHECK_THROWS_WITH(gt::data::load_fashion_mnist(true, dir.path.string()),
                      Catch::Contains("holds 3 images but") && Catch::Contains("holds 4 labels"));
  }
  SECTION("a label outside 0..9") {
    write_raw(dir.file("train-labels-idx1-ubyte"), idx_bytes({3}, {1, 10, 3}));
    CHECK_THROWS_WITH(gt::data::load_fashion_mnist(true, dir.path.string()),
                      Catch::Contains(dir.file("train-labels-idx1-ubyte")) &&
                          Catch::Contains("label 10 of sample 1: expected a class in 0..9"));
  }
  SECTION("labels file with an images magic") {
    write_raw(dir.file("train-labels-idx1-ubyte"), idx_bytes({3, 1, 1}, {1, 2, 3}));
    CHECK_THROWS_WITH(gt::data::load_fashion_mnist(true, dir.path.string()),
                      Catch::Contains(dir.file("train-labels-idx1-ubyte")) &&
                          Catch::Contains("bad magic"));
  }
}

// ---- batch order ----

TEST_CASE("batch_count rounds up, or down with drop_last", "[data][unit]") {
  CHECK(gt::data::batch_count(10, 3, false) == 4);
  CHECK(gt::data::batch_count(10, 3, true) == 3);
  CHECK(gt::data::batch_count(9, 3, false) == 3);
  CHECK(gt::data::batch_count(9, 3, true) == 3);
  CHECK(gt::data::batch_count(2, 3, false) == 1);
  CHECK(gt::data::batch_count(2, 3, true) == 0);
  CHECK(gt::data::batch_count(0, 3, false) == 0);
  CHECK(gt::data::batch_count(60000, 128, false) == 469);
  CHECK(gt::data::batch_count(60000, 128, true) == 468);
  CHECK_THROWS_AS(gt::data::batch_count(10, 0, false), std::invalid_argument);
  CHECK_THROWS_WITH(gt::data::batch_count(-1, 3, false), Catch::Contains("size must be >= 0"));
}

TEST_CASE("epoch_order without shuffle is the identity and leaves the stream", "[data][unit]") {
  std::mt19937_64 rng(5), untouched(5);
  auto order = gt::data::epoch_order(7, false, rng);
  CHECK(order == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6});
  CHECK(rng == untouched);
  CHECK(gt::data::epoch_order(0, true, rng).empty());
  CHECK(gt::data::epoch_order(1, true, rng) == std::vector<int64_t>{0});
}

TEST_CASE("epoch_order shuffles every index exactly once, deterministically", "[data][unit]") {
  constexpr int64_t n = 1000;
  std::mt19937_64 a(42), b(42), c(43);
  std::vector<std::vector<int64_t>> epochs;
  for (int e = 0; e < 3; ++e) {
    auto order = gt::data::epoch_order(n, true, a);
    auto sorted = order;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> iota(n);
    std::iota(iota.begin(), iota.end(), 0);
    REQUIRE(sorted == iota);  // a permutation: every index once
    CHECK(order != iota);
    // The same seed replays the same sequence of epochs.
    CHECK(gt::data::epoch_order(n, true, b) == order);
    epochs.push_back(std::move(order));
  }
  CHECK(epochs[0] != epochs[1]);  // a fresh order each epoch
  CHECK(epochs[1] != epochs[2]);
  CHECK(gt::data::epoch_order(n, true, c) != epochs[0]);  // another seed, another order

  // Pinned values: the draws are gt's own, so this holds with any standard library.
  std::mt19937_64 pinned(0);
  auto first = gt::data::epoch_order(8, true, pinned);
  std::mt19937_64 again(0);
  CHECK(gt::data::epoch_order(8, true, again) == first);
}

TEST_CASE("epoch_order spreads positions evenly", "[data][unit]") {
  // Each index lands in the first position about equally often.
  std::mt19937_64 rng(7);
  std::vector<int> first(5, 0);
  for (int trial = 0; trial < 5000; ++trial) ++first[size_t(gt::data::epoch_order(5, true, rng)[0])];
  for (int count : first) CHECK((count > 850 && count < 1150));
}

TEST_CASE("gather copies the chosen samples in order", "[data][unit]") {
  Dataset ds;
  ds.size = 4;
  ds.rows = 1;
  ds.cols = 2;
  ds.images = {0, 1, 10, 11, 20, 21, 30, 31};
  ds.labels = {5, 6, 7, 8};
  std::vector<float> images;
  std::vector<int64_t> labels;
  const std::vector<int64_t> idx{3, 0, 2};
  gt::data::gather(ds, idx, images, labels);
  CHECK(images == std::vector<float>{30, 31, 0, 1, 20, 21});
  CHECK(labels == std::vector<int64_t>{8, 5, 7});
  const std::vector<int64_t> bad{1, 4};
  CHECK_THROWS_WITH(gt::data::gather(ds, bad, images, labels),
                    Catch::Contains("index 4 is out of range: expected [0, 4)"));
}

TEST_CASE("DataLoader checks its arguments without a cluster", "[data][unit]") {
  Dataset ds;
  ds.size = 10;
  ds.rows = ds.cols = 1;
  ds.images.assign(10, 0.f);
  ds.labels.assign(10, 0);
  CHECK_THROWS_WITH(DataLoader(ds, DataLoaderOptions(0)),
                    Catch::Contains("batch_size must be >= 1, got 0"));
  CHECK_THROWS_AS(DataLoader(std::shared_ptr<const Dataset>(), DataLoaderOptions(2)),
                  std::invalid_argument);
  Dataset broken = ds;
  broken.labels.pop_back();
  CHECK_THROWS_WITH(DataLoader(broken, DataLoaderOptions(2)),
                    Catch::Contains("inconsistent dataset"));

  DataLoader keep(ds, DataLoaderOptions(3));
  DataLoader drop(ds, DataLoaderOptions(3).drop_last(true).shuffle(true).seed(9));
  CHECK(keep.size() == 4);
  CHECK(drop.size() == 3);
  CHECK(drop.options().seed() == 9);
  CHECK(drop.options().shuffle());
  CHECK(keep.dataset().size == 10);
  // Iterating positions needs no cluster; only dereferencing creates tensors.
  int64_t batches = 0;
  for (auto it = drop.begin(); it != drop.end(); ++it) ++batches;
  CHECK(batches == 3);
  CHECK(drop.epochs() == 1);
  CHECK(gt::client::session_if_started() == nullptr);
}

// ---- DataLoader with tensors (against the in-process fake dispatcher) ----

namespace {

using Connected = gt::test::FakeSession;

// A dataset whose sample i has pixels {i, i + 0.5} and label i % 3.
Dataset numbered(int64_t n) {
  Dataset ds;
  ds.size = n;
  ds.rows = 1;
  ds.cols = 2;
  for (int64_t i = 0; i < n; ++i) {
    ds.images.push_back(float(i));
    ds.images.push_back(float(i) + 0.5f);
    ds.labels.push_back(i % 3);
  }
  return ds;
}

// The sample ids of every batch of one epoch, read back through the cluster.
std::vector<std::vector<int64_t>> read_epoch(DataLoader& loader, bool drop_last, int64_t bs) {
  std::vector<std::vector<int64_t>> out;
  for (const auto& batch : loader) {
    const int64_t b = batch.labels.size(0);
    CHECK(batch.images.shape() == gt::Shape{b, 2});
    CHECK(batch.images.dtype() == gt::kFloat32);
    CHECK(batch.labels.dtype() == gt::kInt64);
    if (drop_last) CHECK(b == bs);
    auto pixels = batch.images.to_vector<float>();
    auto labels = batch.labels.to_vector<int64_t>();
    std::vector<int64_t> ids;
    for (int64_t k = 0; k < b; ++k) {
      const auto id = int64_t(pixels[size_t(2 * k)]);
      CHECK(pixels[size_t(2 * k + 1)] == float(id) + 0.5f);
      CHECK(labels[size_t(k)] == id % 3);
      ids.push_back(id);
    }
    out.push_back(ids);
  }
  return out;
}

}  // namespace

TEST_CASE("DataLoader yields every sample once per epoch and reshuffles", "[data][unit]") {
  Connected c;
  constexpr int64_t n = 23, bs = 5;
  DataLoader loader(numbered(n), DataLoaderOptions(bs).shuffle(true).seed(11));
  REQUIRE(loader.size() == 5);

  std::mt19937_64 replay(11);
  std::vector<std::vector<int64_t>> orders;
  for (int epoch = 0; epoch < 2; ++epoch) {
    auto batches = read_epoch(loader, false, bs);
    REQUIRE(batches.size() == 5);
    CHECK(batches.back().size() == 3);
    std::vector<int64_t> seen;
    for (auto& b : batches) seen.insert(seen.end(), b.begin(), b.end());
    // The order is the next permutation of the seed's stream.
    CHECK(seen == gt::data::epoch_order(n, true, replay));
    auto sorted = seen;
    std::sort(sorted.begin(), sorted.end());
    std::vector<int64_t> iota(n);
    std::iota(iota.begin(), iota.end(), 0);
    CHECK(sorted == iota);
    orders.push_back(seen);
  }
  CHECK(orders[0] != orders[1]);
  CHECK(loader.epochs() == 2);

  // Another loader with the same seed replays the same epochs.
  DataLoader twin(numbered(n), DataLoaderOptions(bs).shuffle(true).seed(11));
  auto first = read_epoch(twin, false, bs);
  std::vector<int64_t> seen;
  for (auto& b : first) seen.insert(seen.end(), b.begin(), b.end());
  CHECK(seen == orders[0]);
}

TEST_CASE("DataLoader in order with drop_last leaves out the short batch", "[data][unit]") {
  Connected c;
  DataLoader loader(numbered(7), DataLoaderOptions(3).drop_last(true));
  auto batches = read_epoch(loader, true, 3);
  REQUIRE(batches.size() == 2);
  CHECK(batches[0] == std::vector<int64_t>{0, 1, 2});
  CHECK(batches[1] == std::vector<int64_t>{3, 4, 5});

  // Dereferencing twice reuses the batch; past the end throws.
  auto it = loader.begin();
  const uint64_t id = it->images.id();
  CHECK((*it).images.id() == id);
  ++it;
  CHECK(it->images.id() != id);
  ++it;
  CHECK(it == loader.end());
  CHECK_THROWS_WITH(*it, Catch::Contains("not on a batch"));
}

// ---- the real files (Debian's dataset-fashion-mnist) ----

TEST_CASE("load_fashion_mnist reads Debian's Fashion-MNIST", "[data][integration]") {
  const std::string dir = gt::data::default_fashion_mnist_dir();
  if (!fs::exists(fs::path(dir) / "train-labels-idx1-ubyte.gz") &&
      !fs::exists(fs::path(dir) / "train-labels-idx1-ubyte")) {
    WARN("Fashion-MNIST not found in " << dir
                                       << " (apt-get install dataset-fashion-mnist); skipped");
    return;
  }
  for (bool train : {true, false}) {
    INFO((train ? "train" : "test"));
    const Dataset ds = gt::data::load_fashion_mnist(train);
    CHECK(ds.size == (train ? 60000 : 10000));
    CHECK(ds.rows == 28);
    CHECK(ds.cols == 28);
    REQUIRE(ds.images.size() == size_t(ds.size) * 784);
    REQUIRE(ds.labels.size() == size_t(ds.size));
    std::vector<int64_t> per_class(10, 0);
    for (int64_t l : ds.labels) {
      REQUIRE((l >= 0 && l <= 9));
      ++per_class[size_t(l)];
    }
    // Fashion-MNIST is balanced: 6000 (train) or 1000 (test) per class.
    for (int64_t count : per_class) CHECK(count == ds.size / 10);
    if (train) {
      // Normalised with the training set's own statistics: mean 0, std 1.
      double sum = 0, sq = 0;
      for (float v : ds.images) {
        sum += v;
        sq += double(v) * v;
      }
      const double mean = sum / double(ds.images.size());
      const double var = sq / double(ds.images.size()) - mean * mean;
      CHECK(std::abs(mean) < 0.01);
      CHECK(std::abs(std::sqrt(var) - 1.0) < 0.01);
    }
  }
}

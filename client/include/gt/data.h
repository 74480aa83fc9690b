#pragma once
// gt::data: datasets on the host and a DataLoader that turns them into batches
// of gt tensors. Fashion-MNIST comes from Debian's dataset-fashion-mnist
// package (/usr/share/datasets/fashion-mnist) or from GT_DATA_DIR.
//
//   auto train = gt::data::load_fashion_mnist(/*train=*/true);
//   gt::data::DataLoader loader(std::move(train),
//                               gt::data::DataLoaderOptions(128).shuffle(true).seed(1));
//   for (auto& batch : loader) { /* batch.images [B, 784] float32, batch.labels [B] int64 */ }
//
// Loading and the batch order need no cluster; only dereferencing a
// DataLoader iterator creates tensors (and so starts or joins the session).

#include <cstdint>
#include <iterator>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <gt/export.h>
#include <gt/tensor.h>

namespace gt::data {

/// Mean and standard deviation of Fashion-MNIST's training pixels scaled to
/// [0, 1]; load_fashion_mnist normalises with these.
inline constexpr float kFashionMnistMean = 0.2860f;
inline constexpr float kFashionMnistStd = 0.3530f;

/// Images and labels held on the host. A plain value (copying copies the
/// data; a DataLoader shares one copy). Image i is
/// images[i * rows * cols, (i + 1) * rows * cols), row-major.
struct Dataset {
  /// size * rows * cols pixels, row-major per image.
  std::vector<float> images;
  /// size class indices.
  std::vector<int64_t> labels;
  /// Number of samples.
  int64_t size = 0;
  /// Pixel rows per image.
  int64_t rows = 0;
  /// Pixel columns per image.
  int64_t cols = 0;

  /// Pixels per image (rows * cols).
  int64_t image_numel() const { return rows * cols; }
};

/// An IDX file's content: its dims and its unsigned-byte elements.
struct IdxArray {
  /// Extents, outermost first (e.g. {60000, 28, 28}).
  std::vector<int64_t> dims;
  /// Product(dims) bytes, row-major.
  std::vector<uint8_t> data;
};

/// Reads an IDX file of unsigned bytes (magic 0x0000 08 NN, big-endian dims)
/// with `expected_dims` dims, gzip-compressed or not. Throws gt::Error naming
/// the path when it cannot be opened, its magic is wrong, it is truncated or
/// it has trailing bytes.
GT_API IdxArray read_idx(const std::string& path, int expected_dims);

/// The directory load_fashion_mnist reads when given no root: GT_DATA_DIR
/// (read at each call) or /usr/share/datasets/fashion-mnist.
GT_API std::string default_fashion_mnist_dir();

/// Loads Fashion-MNIST's training (60000) or test (10000) split from `root`
/// (default_fashion_mnist_dir() when empty), reading NAME.gz or NAME for
/// NAME = {train,t10k}-{images-idx3,labels-idx1}-ubyte. Pixels are scaled to
/// [0, 1] and normalised with kFashionMnistMean/kFashionMnistStd. Throws
/// gt::Error when a file is missing (naming the path and how to install the
/// package), corrupt (naming the file and what was expected), or when the two
/// files disagree on the sample count or a label is outside 0..9.
GT_API Dataset load_fashion_mnist(bool train, const std::string& root = "");

/// Options of a DataLoader, built the LibTorch way:
/// `DataLoaderOptions(128).shuffle(true).seed(7).drop_last(true)`. A value
/// type; setters modify and return *this.
class DataLoaderOptions {
 public:
  /// Batches of `batch_size` samples (>= 1, checked by the DataLoader).
  explicit DataLoaderOptions(int64_t batch_size = 1) : batch_size_(batch_size) {}

  /// Sets the batch size.
  DataLoaderOptions& batch_size(int64_t v) {
    batch_size_ = v;
    return *this;
  }
  /// Sets whether every epoch visits the samples in a fresh random order.
  DataLoaderOptions& shuffle(bool v) {
    shuffle_ = v;
    return *this;
  }
  /// Sets the seed of the shuffling stream.
  DataLoaderOptions& seed(uint64_t v) {
    seed_ = v;
    return *this;
  }
  /// Sets whether a last, smaller batch is dropped.
  DataLoaderOptions& drop_last(bool v) {
    drop_last_ = v;
    return *this;
  }
  /// Sets whether the dataset is uploaded to the cluster once and batches are
  /// gathered there (an index_select per batch, uploading only the indices),
  /// instead of uploading every batch's pixels.
  DataLoaderOptions& resident(bool v) {
    resident_ = v;
    return *this;
  }

  /// Samples per batch.
  int64_t batch_size() const { return batch_size_; }
  /// Whether epochs are shuffled (false: 0, 1, ..., size-1).
  bool shuffle() const { return shuffle_; }
  /// Seed of the std::mt19937_64 stream that shuffles.
  uint64_t seed() const { return seed_; }
  /// Whether a last batch smaller than batch_size() is dropped.
  bool drop_last() const { return drop_last_; }
  /// Whether the dataset lives on the cluster (see resident(bool)).
  bool resident() const { return resident_; }

 private:
  int64_t batch_size_;
  bool shuffle_ = false;
  uint64_t seed_ = 0;
  bool drop_last_ = false;
  bool resident_ = false;
};

/// Number of batches an epoch of `size` samples gives: ceil(size / batch_size),
/// or floor with drop_last. Throws std::invalid_argument unless size >= 0 and
/// batch_size >= 1.
GT_API int64_t batch_count(int64_t size, int64_t batch_size, bool drop_last);

/// The sample order of one epoch: 0, 1, ..., size-1, Fisher-Yates shuffled
/// with draws from `rng` when `shuffle` (rng untouched otherwise). The draws
/// avoid std::shuffle and std::uniform_int_distribution, so a seed gives the
/// same order with every standard library.
GT_API std::vector<int64_t> epoch_order(int64_t size, bool shuffle, std::mt19937_64& rng);

/// One batch: images [B, rows * cols] float32 and labels [B] int64.
struct Batch {
  Tensor images;
  Tensor labels;
};

/// Pixels and labels of the samples `indices`, in that order, as host
/// vectors (indices.size() * image_numel() floats, indices.size() labels).
/// Throws std::invalid_argument for an index outside [0, dataset.size).
GT_API void gather(const Dataset& dataset, std::span<const int64_t> indices,
                   std::vector<float>& images, std::vector<int64_t>& labels);

/// Iterates a Dataset in batches of gt tensors.
///
/// Epochs: each begin() starts an epoch. With shuffle, its order is the next
/// permutation drawn from a std::mt19937_64 seeded once with the seed, so a
/// seed fixes the whole sequence of epochs; without, samples come in order.
/// size() batches of batch_size samples each, the last one smaller unless
/// drop_last (then it is left out).
///
/// Tensors: dereferencing an iterator gathers the batch on the host and
/// creates it with gt::tensor (a sync-free, asynchronous upload; the first
/// one starts the session). With resident(true), the first dereference
/// uploads the whole dataset once (shared by the loader's copies and epochs)
/// and each batch is gathered on the workers with index_select, so only the
/// batch's indices travel. The batch is built once per position.
///
/// Ownership and copies: the loader shares its Dataset (const) with its
/// copies and iterators; copies also share the shuffling stream. Not
/// thread-safe: use one loader (and its iterators) from one thread.
///
/// Errors: the constructor throws std::invalid_argument for batch_size < 1;
/// creating tensors throws what gt::tensor throws (gt::TransportError...).
class GT_API DataLoader {
 public:
  /// An input iterator over the batches of one epoch.
  class GT_API iterator {
   public:
    using iterator_category = std::input_iterator_tag;
    using value_type = Batch;
    using difference_type = std::ptrdiff_t;
    using pointer = const Batch*;
    using reference = const Batch&;

    iterator() = default;
    /// The current batch (created on first access).
    const Batch& operator*() const;
    const Batch* operator->() const { return &**this; }
    /// Moves to the next batch.
    iterator& operator++();
    /// Moves to the next batch (no copy of the batch is returned).
    void operator++(int) { ++*this; }
    /// Same position (batch index) of an epoch; any end() compares equal to
    /// an iterator past the last batch.
    bool operator==(const iterator& other) const { return index_ == other.index_; }
    /// Index of the current batch in the epoch.
    int64_t index() const { return index_; }

   private:
    friend class DataLoader;
    struct Epoch;
    iterator(std::shared_ptr<const Epoch> epoch, int64_t index);

    std::shared_ptr<const Epoch> epoch_;
    int64_t index_ = 0;
    mutable std::optional<Batch> batch_;
  };

  /// A loader sharing `dataset`; throws std::invalid_argument when it is null.
  DataLoader(std::shared_ptr<const Dataset> dataset, DataLoaderOptions options);
  /// A loader owning `dataset` (pass it with std::move to avoid a copy).
  DataLoader(Dataset dataset, DataLoaderOptions options);

  /// Starts a new epoch (reshuffles when shuffle is on).
  iterator begin();
  /// Past the last batch.
  iterator end() const;
  /// Batches per epoch.
  int64_t size() const;
  /// The dataset iterated.
  const Dataset& dataset() const { return *dataset_; }
  /// The options given.
  const DataLoaderOptions& options() const { return options_; }
  /// Epochs started so far (begin() calls).
  int64_t epochs() const;

 private:
  struct State;
  std::shared_ptr<const Dataset> dataset_;
  DataLoaderOptions options_;
  std::shared_ptr<State> state_;
};

}  // namespace gt::data

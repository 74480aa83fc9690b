// gt's main job: an MLP (784-256-256-10, ReLU) trained on Fashion-MNIST
// through an auto-started local cluster (or the one GT_DISPATCHER names).
// Every op, the backward pass and the optimizer updates run on the workers;
// the program only fetches the loss for the progress bar and the accuracy.
// examples/train_fashion_mnist_libtorch.cpp trains the same model with plain
// LibTorch for comparison (same data order, same hyper-parameters).
//
//   gt_train_fashion_mnist [--epochs 3] [--batch-size 128] [--optimizer adam|sgd]
//       [--lr 0.001] [--momentum 0.9] [--seed 0] [--data-dir DIR] [--save FILE]
//
// Data parallel: GT_WORKERS=2 GT_CONFIG=configs/data_parallel.yaml splits each
// batch over the workers ("batch" scope) and replicates the parameters
// ("params"); without a config the scopes change nothing (docs/sharding.md).
//
// Prints a progress bar per epoch (loss, samples/s), the test accuracy after
// each epoch and at the end, and one machine-readable "result:" line.

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include <gt/gt.h>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct MlpImpl : gt::nn::Module {
  MlpImpl() : Module("Mlp"), fc1(784, 256), fc2(256, 256), fc3(256, 10) {
    register_module("fc1", fc1);
    register_module("fc2", fc2);
    register_module("fc3", fc3);
  }
  gt::Tensor forward(const gt::Tensor& x) const {
    return fc3(fc2(fc1(x).relu()).relu());
  }
  gt::nn::Linear fc1, fc2, fc3;
};
GT_MODULE(Mlp);

// "epoch 2/3 [##########----------] 234/469  loss 0.4521  31250 samples/s"
// On a terminal the line is redrawn in place (\r) every few steps; elsewhere
// only the epoch's last state is written (no fetch per step: the stream keeps
// flowing).
void progress(bool tty, int epoch, int epochs, int64_t step, int64_t steps, double loss,
              double rate) {
  constexpr int kWidth = 24;
  const int filled = steps ? int(kWidth * step / steps) : kWidth;
  std::string bar(size_t(filled), '#');
  bar.append(size_t(kWidth - filled), '-');
  std::fprintf(stderr, "%sepoch %d/%d [%s] %lld/%lld  loss %.4f  %.0f samples/s", tty ? "\r" : "",
               epoch, epochs, bar.c_str(), static_cast<long long>(step),
               static_cast<long long>(steps), loss, rate);
  std::fflush(stderr);
}

// Correct predictions over a split, in batches of 1000 without autograd. The
// per-batch counts stay on the workers; one fetch at the end.
int64_t count_correct(Mlp& model, const std::shared_ptr<const gt::data::Dataset>& split) {
  model->eval();
  gt::NoGradGuard no_grad;
  gt::data::DataLoader loader(split, gt::data::DataLoaderOptions(1000).resident(true));
  gt::Tensor correct = gt::zeros({}, gt::kInt64);
  for (const auto& batch : loader) {
    correct = correct + (model(batch.images).argmax(1) == batch.labels).sum();
  }
  model->train();
  return correct.item<int64_t>();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fashion-MNIST MLP (784-256-256-10) trained through gt"};
  int epochs = 3;
  int64_t batch_size = 128;
  std::string optimizer_name = "adam";
  double lr = 0.0;  // 0: the optimizer's default (sgd 0.1, adam 1e-3)
  double momentum = 0.9;
  uint64_t seed = 0;
  std::string data_dir;
  std::string save_path;
  app.add_option("--epochs", epochs, "epochs to train")->check(CLI::Range(1, 1000));
  app.add_option("--batch-size", batch_size, "samples per step")
      ->check(CLI::Range(int64_t{1}, int64_t{60000}));
  app.add_option("--optimizer", optimizer_name, "adam (default) or sgd (with momentum)")
      ->check(CLI::IsMember({"sgd", "adam"}));
  app.add_option("--lr", lr, "learning rate (default: sgd 0.1, adam 0.001)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--momentum", momentum, "SGD momentum")->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", seed, "seed of the initial weights and the shuffling");
  app.add_option("--data-dir", data_dir,
                 "Fashion-MNIST directory (default: GT_DATA_DIR or "
                 "/usr/share/datasets/fashion-mnist)");
  app.add_option("--save", save_path, "write the trained parameters to this file (gt::save)");
  CLI11_PARSE(app, argc, argv);
  if (lr == 0.0) lr = optimizer_name == "sgd" ? 0.1 : 1e-3;

  try {
    const auto t_load = Clock::now();
    auto train = std::make_shared<const gt::data::Dataset>(
        gt::data::load_fashion_mnist(true, data_dir));
    auto test = std::make_shared<const gt::data::Dataset>(
        gt::data::load_fashion_mnist(false, data_dir));
    std::cerr << "data: " << train->size << " train, " << test->size << " test images of "
              << train->rows << "x" << train->cols << " loaded in " << seconds_since(t_load)
              << " s\n";

    const auto t_start = Clock::now();
    gt::init();  // starts the local cluster (or connects to GT_DISPATCHER)
    gt::manual_seed(seed);
    Mlp model(nullptr);
    {
      gt::signal::Context params("params");
      model = Mlp();
    }
    std::unique_ptr<gt::optim::Optimizer> optimizer;
    if (optimizer_name == "sgd") {
      optimizer = std::make_unique<gt::optim::SGD>(
          model->parameters(), gt::optim::SGDOptions(lr).momentum(momentum));
    } else {
      optimizer =
          std::make_unique<gt::optim::Adam>(model->parameters(), gt::optim::AdamOptions(lr));
    }
    gt::synchronize();
    std::cerr << "cluster: up in " << seconds_since(t_start) << " s; model: MLP 784-256-256-10, "
              << optimizer_name << " lr " << lr
              << (optimizer_name == "sgd" ? " momentum " + std::to_string(momentum) : "")
              << ", batch " << batch_size << "\n";

    // resident: the training split is uploaded once and each batch is gathered
    // on the workers, as the LibTorch baseline keeps its split in one tensor.
    gt::data::DataLoader loader(
        train, gt::data::DataLoaderOptions(batch_size).shuffle(true).seed(seed).resident(true));
    const int64_t steps = loader.size();
    const bool tty = ::isatty(STDERR_FILENO) != 0;
    std::vector<double> epoch_seconds;
    double last_loss = 0.0;

    for (int epoch = 1; epoch <= epochs; ++epoch) {
      // The loss is summed on the workers; fetching it is the only sync.
      gt::Tensor loss_sum = gt::zeros({});
      const auto t_epoch = Clock::now();
      int64_t step = 0, seen = 0;
      for (const auto& batch : loader) {
        optimizer->zero_grad();
        gt::Tensor loss;
        {
          gt::signal::Context split("batch");
          loss = gt::nn::functional::cross_entropy(model(batch.images), batch.labels);
        }
        loss.backward();
        optimizer->step();
        loss_sum = loss_sum + loss.detach();
        ++step;
        seen += batch.labels.size(0);
        if (tty && (step % 50 == 0 || step == steps)) {
          progress(tty, epoch, epochs, step, steps, loss_sum.item<double>() / double(step),
                   double(seen) / std::max(seconds_since(t_epoch), 1e-9));
        }
      }
      last_loss = loss_sum.item<double>() / double(steps);  // waits for the epoch
      const double seconds = seconds_since(t_epoch);
      epoch_seconds.push_back(seconds);
      progress(tty, epoch, epochs, steps, steps, last_loss, double(train->size) / seconds);
      // Evaluated after the clock stopped: not part of the epoch's time.
      const double test_acc = double(count_correct(model, test)) / double(test->size);
      std::fprintf(stderr, "  %.2f s  %.3f ms/step  test acc %.2f%%\n", seconds,
                   1e3 * seconds / double(steps), 100.0 * test_acc);
    }

    const int64_t correct = count_correct(model, test);
    const double accuracy = double(correct) / double(test->size);
    double total = 0;
    for (double s : epoch_seconds) total += s;
    std::printf("test accuracy: %.2f%% (%lld/%lld) after %d epochs\n", 100.0 * accuracy,
                static_cast<long long>(correct), static_cast<long long>(test->size), epochs);
    std::printf("time: %.2f s/epoch, %.3f ms/step, %.0f samples/s\n", total / epochs,
                1e3 * total / double(steps * epochs), double(train->size) * epochs / total);
    std::printf(
        "result: impl=gt optimizer=%s lr=%g batch=%lld epochs=%d test_acc=%.4f "
        "final_loss=%.4f epoch_s=%.3f step_ms=%.3f samples_per_s=%.0f\n",
        optimizer_name.c_str(), lr, static_cast<long long>(batch_size), epochs, accuracy,
        last_loss, total / epochs, 1e3 * total / double(steps * epochs),
        double(train->size) * epochs / total);
    if (!save_path.empty()) {
      gt::save(model, save_path);
      std::printf("saved: %s\n", save_path.c_str());
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

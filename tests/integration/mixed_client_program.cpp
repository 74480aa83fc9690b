// One of the many clients of multiclient_test.cpp's load case: a user's
// program with a mixed workload whose every result it checks against a
// reference computed here in plain C++. Its data depend on its index, so a
// tensor of another session that leaked in, a step run twice, or a reply
// delivered to the wrong client would show up as a wrong value.
//
//   gt_mixed_client_program INDEX ROUNDS      (connects to GT_DISPATCHER)
//
// Prints one line, "ok INDEX steps=N", and exits 0 when every value was
// right; prints what differed and exits 1 otherwise (2 on an error).

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <gt/gt.h>

namespace {

int g_index = 0;
int g_failures = 0;

void expect_close(const char* what, int round, double got, double want, double tolerance) {
  if (std::fabs(got - want) <= tolerance * (1.0 + std::fabs(want))) return;
  if (++g_failures <= 5) {
    std::printf("client %d round %d: %s is %.9g, expected %.9g\n", g_index, round, what, got, want);
  }
}

// A small linear regression trained with autograd and SGD: the weights after
// each step are checked against gradient descent done here.
void train(int round) {
  constexpr int kRows = 32, kCols = 4, kSteps = 5;
  constexpr double kLr = 0.05;
  std::vector<float> x(kRows * kCols), y(kRows);
  for (int r = 0; r < kRows; ++r) {
    double t = 0;
    for (int c = 0; c < kCols; ++c) {
      x[r * kCols + c] = static_cast<float>(std::sin(0.3 * r + c + g_index));
      t += (c + 1 + 0.1 * g_index) * x[r * kCols + c];
    }
    y[r] = static_cast<float>(t);
  }
  std::vector<double> w_ref(kCols, 0.0);
  gt::Tensor xs = gt::tensor(x, {kRows, kCols}), ys = gt::tensor(y, {kRows, 1});
  gt::Tensor w = gt::zeros({kCols, 1}).requires_grad_();
  gt::optim::SGD opt({w}, gt::optim::SGDOptions(kLr));
  for (int step = 0; step < kSteps; ++step) {
    opt.zero_grad();
    const gt::Tensor loss = (xs.matmul(w) - ys).pow(2.0).mean();
    loss.backward();
    opt.step();
    // loss = mean((x w - y)^2), so dloss/dw = 2/N x^T (x w - y).
    std::vector<double> grad(kCols, 0.0);
    for (int r = 0; r < kRows; ++r) {
      double e = -y[r];
      for (int c = 0; c < kCols; ++c) e += x[r * kCols + c] * w_ref[c];
      for (int c = 0; c < kCols; ++c) grad[c] += 2.0 / kRows * x[r * kCols + c] * e;
    }
    for (int c = 0; c < kCols; ++c) w_ref[c] -= kLr * grad[c];
  }
  const std::vector<float> got = w.to_vector<float>();
  for (int c = 0; c < kCols; ++c) expect_close("a trained weight", round, got[c], w_ref[c], 1e-4);
}

// A pipelined chain of elementwise ops with no round trip until the end: the
// worker may compile the repeating chain, and other clients' work lands
// between its ops.
void stream(int round) {
  constexpr int kN = 4096, kPasses = 12;
  gt::Tensor y = gt::arange(0.0, static_cast<double>(kN), 1.0) * (1.0 / kN) + g_index;
  for (int i = 0; i < kPasses; ++i) y = y * 0.5 + 1.0;
  const std::vector<float> got = y.to_vector<float>();
  for (int i = 0; i < kN; i += 97) {
    double want = static_cast<double>(i) / kN + g_index;
    for (int p = 0; p < kPasses; ++p) want = want * 0.5 + 1.0;
    expect_close("a streamed value", round, got[i], want, 1e-5);
  }
}

// Data up and back: this client's own values, scaled on the worker.
void upload(int round) {
  constexpr int kN = 2048;
  std::vector<float> host(kN);
  for (int i = 0; i < kN; ++i) host[i] = static_cast<float>((i * 7 + g_index * 131 + round) % 1000);
  const std::vector<float> got = (gt::tensor(host, {kN}) * 2.0 + 1.0).to_vector<float>();
  for (int i = 0; i < kN; ++i) {
    if (got[i] != host[i] * 2.0f + 1.0f) {
      expect_close("an uploaded value", round, got[i], host[i] * 2.0 + 1.0, 0);
      return;
    }
  }
}

// Reductions over a matmul, to a scalar round trip.
void reduce(int round) {
  constexpr int kN = 24;
  std::vector<float> a(kN * kN), b(kN * kN);
  for (int i = 0; i < kN * kN; ++i) {
    a[i] = static_cast<float>(((i + g_index) % 11) - 5);
    b[i] = static_cast<float>(((i * 3 + round) % 7) - 3);
  }
  double want = 0;  // sum of relu(a @ b): small integers, exact in float
  for (int r = 0; r < kN; ++r) {
    for (int c = 0; c < kN; ++c) {
      double v = 0;
      for (int k = 0; k < kN; ++k) v += a[r * kN + k] * b[k * kN + c];
      want += v > 0 ? v : 0;
    }
  }
  const float got = gt::tensor(a, {kN, kN}).matmul(gt::tensor(b, {kN, kN})).relu().sum().item<float>();
  expect_close("sum(relu(a @ b))", round, got, want, 0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s INDEX ROUNDS\n", argv[0]);
    return 2;
  }
  g_index = std::atoi(argv[1]);
  const int rounds = std::atoi(argv[2]);
  void (*const workloads[])(int) = {train, stream, upload, reduce};
  constexpr int kWorkloads = 4;
  int steps = 0;
  try {
    // Each client starts on a different workload, so they overlap.
    for (int round = 0; round < rounds; ++round) {
      for (int k = 0; k < kWorkloads; ++k, ++steps) workloads[(g_index + k) % kWorkloads](round);
    }
    gt::shutdown();
  } catch (const std::exception& e) {
    std::printf("client %d: error after %d steps: %s\n", g_index, steps, e.what());
    return 2;
  }
  if (g_failures > 0) {
    std::printf("client %d: %d wrong values in %d steps\n", g_index, g_failures, steps);
    return 1;
  }
  std::printf("ok %d steps=%d\n", g_index, steps);
  return 0;
}

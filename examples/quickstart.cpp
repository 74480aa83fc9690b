// gt quickstart: tensors on an auto-started local cluster (no set-up needed).
// With GT_DISPATCHER=tcp://host:port it runs on that cluster instead.

#include <iostream>

#include <gt/gt.h>

int main() {
  gt::manual_seed(0);
  auto w = gt::randn({4, 3});
  auto x = gt::arange(0.0, 6.0, 1.0).reshape({2, 3});
  auto y = (x.matmul(w.transpose(0, 1)) + 1.0).relu();
  std::cout << "x =\n" << x << "\n";
  std::cout << "relu(x @ w.T + 1) =\n" << y << "\n";
  std::cout << "sum = " << y.sum().item<float>() << ", mean of rows = " << y.mean({1}) << "\n";
  return 0;
}

// A client that streams work until it is killed: multiclient_test.cpp kills
// it with SIGKILL mid-stream and checks that the cluster frees what it held.
// Connects to GT_DISPATCHER; prints "ready" once its tensors exist.

#include <iostream>
#include <vector>

#include <gt/gt.h>

int main() {
  const gt::Tensor x = gt::ones({1 << 20});  // 4 MiB
  std::vector<gt::Tensor> kept;
  for (int i = 0; i < 4; ++i) kept.push_back(x * static_cast<double>(i));
  gt::synchronize();
  std::cout << "ready" << std::endl;
  for (int i = 0;; ++i) {
    const gt::Tensor y = x * 3.0 + kept[static_cast<size_t>(i % 4)];
    if (i % 16 == 0) gt::synchronize();
  }
}

// A user program with zero set-up: its first gt call starts a private local
// cluster. Prints one checkable line. Used by cluster_test.cpp.

#include <iostream>

#include <gt/gt.h>

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 100;
  auto x = gt::arange(n).to_vector<int64_t>();
  auto s = (gt::arange(n) * 2).sum().item<int64_t>();
  std::cout << "n=" << x.size() << " sum=" << s << std::endl;
  return 0;
}

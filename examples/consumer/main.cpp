#include <iostream>

#include <gt/gt.h>

int main() {
  auto x = gt::ones({2, 3}) * 2.0;
  std::cout << "consumer sum=" << x.sum().item<float>() << std::endl;
}

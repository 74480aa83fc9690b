#pragma once
// gt: a distributed tensor runtime. The one header programs include.
//
//   #include <gt/gt.h>
//   auto x = gt::randn({4, 3});
//   std::cout << x.matmul(x.transpose(0, 1)).relu() << "\n";

#include <gt/autograd.h>
#include <gt/config.h>
#include <gt/data.h>
#include <gt/debug.h>
#include <gt/dtype.h>
#include <gt/error.h>
#include <gt/export.h>
#include <gt/nn.h>
#include <gt/optim.h>
#include <gt/options.h>
#include <gt/scalar.h>
#include <gt/session.h>
#include <gt/signal.h>
#include <gt/tensor.h>

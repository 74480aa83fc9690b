// gt_client_bench: the client's own cost, measured against the in-process fake
// dispatcher (no workers, no compute), so transport and issue overhead show
// apart from execution. Not a test; run by hand:
//   gt_client_bench [ops]
// Prints one human line and one RESULT line of JSON; exits non-zero on error.

#include <chrono>
#include <cstdlib>
#include <iostream>

#include <gt/gt.h>

#include "client/internal/api.h"
#include "fake_dispatcher.h"

int main(int argc, char** argv) {
  using Clock = std::chrono::steady_clock;
  const long ops = argc > 1 ? std::strtol(argv[1], nullptr, 10) : 200000;
  if (argc > 2 || ops < 1) {
    std::cerr << "usage: gt_client_bench [ops >= 1]\n";
    return 2;
  }
  try {
    gt::test::FakeDispatcher fake;
    auto options = gt::client::SessionOptions::from_env();
    options.endpoint = fake.endpoint();
    // The fake answers heartbeats only after working through the backlog.
    options.heartbeat_timeout = std::chrono::seconds(60);
    auto session = gt::client::connect(options);

    // Sync round trips on an idle session.
    constexpr int kSyncs = 2000;
    for (int i = 0; i < 100; ++i) gt::synchronize();
    const auto s0 = Clock::now();
    for (int i = 0; i < kSyncs; ++i) gt::synchronize();
    const double idle_sync_us =
        std::chrono::duration<double, std::micro>(Clock::now() - s0).count() / kSyncs;

    // Pipelined issue: each iteration issues two ops and releases two tensors.
    auto x = gt::zeros({4});
    auto w = gt::zeros({4});
    gt::synchronize();
    const auto t0 = Clock::now();
    for (long i = 0; i < ops / 2; ++i) {
      auto y = x + w;
      x = y * 0.5;
    }
    const auto t1 = Clock::now();
    gt::synchronize();
    const auto t2 = Clock::now();

    // Sync round trips after the stream.
    const auto t3 = Clock::now();
    for (int i = 0; i < kSyncs; ++i) gt::synchronize();
    const auto t4 = Clock::now();

    const double issued = 2.0 * (ops / 2);
    const double issue_s = std::chrono::duration<double>(t1 - t0).count();
    const double total_s = std::chrono::duration<double>(t2 - t0).count();
    const double sync_us = std::chrono::duration<double, std::micro>(t4 - t3).count() / kSyncs;
    const auto stats = session->stats();
    std::cout << "client: " << issue_s * 1e6 / issued << " us/op to issue ("
              << issued / issue_s << " ops/s), " << issued / total_s
              << " ops/s through the fake, sync round trip " << idle_sync_us << " us idle, "
              << sync_us << " us after the stream, "
              << stats.batches_sent << " batches\n";
    std::cout << "RESULT {\"issue_ops_per_s\":" << issued / issue_s
              << ",\"pipelined_ops_per_s\":" << issued / total_s
              << ",\"sync_round_trip_us\":" << idle_sync_us << "}\n";
    gt::shutdown();
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "gt_client_bench: " << e.what() << "\n";
    return 1;
  }
}

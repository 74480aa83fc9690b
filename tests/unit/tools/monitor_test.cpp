// How a tool reaches a dispatcher's event stream (tools/monitor.h).

#include <catch2/catch.hpp>

#include <gt/error.h>

#include "common/env.h"
#include "tools/monitor.h"

using gt::tools::reachable_events_endpoint;

TEST_CASE("monitor connects to a wildcard event stream through the dispatcher's host",
          "[monitor][unit]") {
  CHECK(reachable_events_endpoint("tcp://0.0.0.0:41000", "tcp://10.1.2.3:5555") ==
        "tcp://10.1.2.3:41000");
  CHECK(reachable_events_endpoint("tcp://*:41000", "tcp://gpu-box:5555") ==
        "tcp://gpu-box:41000");
  CHECK(reachable_events_endpoint("tcp://[::]:41000", "tcp://[fe80::1]:5555") ==
        "tcp://[fe80::1]:41000");
  // Concrete hosts and other transports are used as advertised.
  CHECK(reachable_events_endpoint("tcp://127.0.0.1:41000", "tcp://10.1.2.3:5555") ==
        "tcp://127.0.0.1:41000");
  CHECK(reachable_events_endpoint("ipc:///tmp/gt-x/dispatcher.events", "ipc:///tmp/gt-x/dispatcher") ==
        "ipc:///tmp/gt-x/dispatcher.events");
  CHECK(reachable_events_endpoint("tcp://0.0.0.0:41000", "ipc:///tmp/d") == "tcp://0.0.0.0:41000");
}

TEST_CASE("monitor resolves the dispatcher: argument, GT_DISPATCHER, else an error",
          "[monitor][unit]") {
  CHECK(gt::tools::resolve_dispatcher("tcp://h:1") == "tcp://h:1");
  {
    gt::ScopedEnv env("GT_DISPATCHER", "tcp://from-env:2");
    CHECK(gt::tools::resolve_dispatcher("") == "tcp://from-env:2");
  }
  gt::ScopedEnv env("GT_DISPATCHER", nullptr);
  gt::ScopedEnv tmp("TMPDIR", "/nonexistent-gt-test-dir");  // falls back to /tmp
  try {
    (void)gt::tools::resolve_dispatcher("");  // may find a local cluster of another test
  } catch (const gt::Error& e) {
    CHECK_THAT(std::string(e.what()),
               Catch::Contains("--endpoint") && Catch::Contains("GT_DISPATCHER"));
  }
}

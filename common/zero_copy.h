#pragma once
// Zero-copy ZeroMQ frames: a frame points at bytes an owner object keeps
// alive, ZeroMQ reads them on its I/O thread, and deletes the owner there
// (through the frame's free function) once the frame is sent.

#include <cstddef>

#include <zmq.hpp>

// GCC says __SANITIZE_THREAD__; clang documents __has_feature(thread_sanitizer).
#if defined(__SANITIZE_THREAD__)
#define GT_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GT_TSAN 1
#endif
#endif

#if defined(GT_TSAN)
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace gt {

// Note [zero-copy frames and TSan]
// A thread that sends a frame and ZeroMQ's I/O thread, which reads its bytes
// and runs its free function, are ordered by ZeroMQ's lock-free pipes, whose
// atomics ThreadSanitizer cannot see (libzmq is not instrumented). Under TSan
// each frame's bytes are therefore released (keyed by their address) by
// every thread that hands the frame to ZeroMQ (tsan::handing_over, called by
// send_frames and the worker's reply sink), and acquired by the free
// function, which is the order ZeroMQ guarantees. Elsewhere both are
// nothing. (ZeroMQ's own copies of the bytes are left out by
// tools/sanitizers/tsan.supp.)
namespace tsan {
#if defined(GT_TSAN)
inline void release(void* p) { __tsan_release(p); }
inline void acquire(void* p) { __tsan_acquire(p); }
#else
inline void release(void*) {}
inline void acquire(void*) {}
#endif
/// Before a frame goes to zmq::socket_t::send.
inline void handing_over(zmq::message_t& frame) {
  if (frame.size() > 0) release(frame.data());
}
}  // namespace tsan

/// A frame over `size` bytes at `data`, which `owner` keeps alive; ZeroMQ
/// deletes `owner` once it has sent the frame.
template <class Owner>
zmq::message_t zero_copy_frame(void* data, size_t size, Owner* owner) {
  return zmq::message_t(
      data, size,
      [](void* bytes, void* hint) {
        tsan::acquire(bytes);
        delete static_cast<Owner*>(hint);
      },
      owner);
}

}  // namespace gt

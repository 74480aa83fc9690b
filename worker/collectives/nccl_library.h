#pragma once
// Private to the NCCL backend (nccl_collectives.cpp, nccl_library.cpp): how
// libnccl and libcudart are loaded and called. Includes nccl.h, so only
// translation units that CMake gives GT_HAVE_NCCL and CUDA's include
// directory may include it; everything below needs GT_NCCL_BACKEND.

#if GT_HAVE_NCCL
#include <nccl.h>
// The backend needs NCCL 2.14 or newer: nonblocking communicators (Note
// [NCCL timeouts] in nccl_collectives.cpp), ncclAvg and bfloat16 all exist
// from there on. (Nested: without nccl.h, NCCL_VERSION is no macro.)
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
#define GT_NCCL_BACKEND 1
#endif
#endif
#ifndef GT_NCCL_BACKEND
#define GT_NCCL_BACKEND 0
#endif

#if GT_NCCL_BACKEND

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace gt::worker::collectives {

/// The NCCL and CUDA runtime functions the backend calls, resolved with
/// dlsym; typed from nccl.h's (and cuda_runtime.h's) declarations.
struct NcclApi {
  std::string description;  // "NCCL 2.28.9 (libnccl.so.2), CUDA runtime libcudart.so.13"
  int version = 0;
  decltype(&::ncclGetVersion) get_version = nullptr;
  decltype(&::ncclGetUniqueId) get_unique_id = nullptr;
  decltype(&::ncclCommInitRankConfig) comm_init_rank_config = nullptr;
  decltype(&::ncclCommAbort) comm_abort = nullptr;
  decltype(&::ncclCommGetAsyncError) comm_get_async_error = nullptr;
  decltype(&::ncclGetErrorString) get_error_string = nullptr;
  decltype(&::ncclGetLastError) get_last_error = nullptr;
  decltype(&::ncclAllReduce) all_reduce = nullptr;
  decltype(&::ncclAllGather) all_gather = nullptr;
  decltype(&::ncclReduceScatter) reduce_scatter = nullptr;
  decltype(&::ncclBroadcast) broadcast = nullptr;
  decltype(&::ncclSend) send = nullptr;
  decltype(&::ncclRecv) recv = nullptr;
  decltype(&::ncclGroupStart) group_start = nullptr;
  decltype(&::ncclGroupEnd) group_end = nullptr;
  decltype(&::cudaGetDeviceCount) cuda_get_device_count = nullptr;
  decltype(&::cudaGetDevice) cuda_get_device = nullptr;
  decltype(&::cudaSetDevice) cuda_set_device = nullptr;
  decltype(&::cudaStreamQuery) cuda_stream_query = nullptr;
  decltype(&::cudaGetErrorName) cuda_get_error_name = nullptr;
  decltype(&::cudaGetErrorString) cuda_get_error_string = nullptr;
};

/// The process's NCCL and CUDA runtime, loaded on first use (Note [loading
/// NCCL] in nccl_library.cpp). Throws gt::Error naming every library tried;
/// a failure is remembered and thrown again.
const NcclApi& nccl_api();

/// Loads from the given candidate names, uncached. Throws like nccl_api().
std::unique_ptr<NcclApi> load_nccl_api(const std::vector<std::string>& nccl_names,
                                       const std::vector<std::string>& cudart_names);

/// "invalid device ordinal (cudaErrorInvalidDevice)".
std::string cuda_error(const NcclApi& api, cudaError_t e);

/// NCCL's words for `r`, and its last error message when it has one.
std::string nccl_error(const NcclApi& api, ncclResult_t r, ncclComm_t comm);

/// NCCL failures that mean a peer or the network went away; the others
/// (CUDA errors, internal errors, misuse) are this rank's.
bool is_transport_failure(ncclResult_t r);

/// Makes `device` this thread's current CUDA device for a scope and then
/// restores the previous one: stream 0 and NCCL's calls mean the current
/// device's (Note [NCCL streams]), and LibTorch on this thread may expect
/// its own.
class CurrentDevice {
 public:
  CurrentDevice(const NcclApi& api, int device);
  ~CurrentDevice();
  CurrentDevice(const CurrentDevice&) = delete;
  CurrentDevice& operator=(const CurrentDevice&) = delete;

  /// cudaSuccess, or why the device could not be made current.
  cudaError_t error() const { return error_; }

 private:
  const NcclApi& api_;
  cudaError_t error_ = cudaSuccess;
  int previous_ = -1;  // to restore; -1: nothing changed
};

/// One step of a poll that lasted `waited`: yields at first, so that a
/// collective of a few microseconds is seen at once, then sleeps, so that a
/// long one costs no CPU.
void poll_pause(std::chrono::steady_clock::duration waited);

}  // namespace gt::worker::collectives

#endif  // GT_NCCL_BACKEND

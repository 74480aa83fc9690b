#include "worker/collectives/nccl_library.h"

#if GT_NCCL_BACKEND

#include <dlfcn.h>

#include <exception>
#include <thread>

#include <gt/error.h>

#include "common/check.h"

namespace gt::worker::collectives {
namespace {

using gt::detail::cat;
using namespace std::chrono_literals;

// Note [loading NCCL]
// gt compiles against nccl.h (which includes cuda_runtime.h) for types,
// constants and the functions' signatures only: libnccl and the CUDA
// runtime are opened at run time with dlopen, by soname, and the functions
// used are looked up with dlsym into pointers typed from those declarations.
// Nothing links them, for two reasons.
// - A worker on a CUDA LibTorch has an NCCL and a CUDA runtime loaded
//   already (PyTorch's wheels ship both). dlopen of a soname that is loaded
//   returns that copy, so gt drives the same NCCL and runtime as LibTorch
//   (one CUDA runtime state, one view of the current device). Each list of
//   candidates is first searched among the libraries already loaded
//   (RTLD_NOLOAD), so a process holding libcudart.so.12 does not open a
//   libcudart.so.13 found first on the search path.
// - A worker binary built where CUDA's headers are must still start where
//   there is no CUDA at all; only an NCCL communicator's creation notices,
//   with an error naming the libraries tried.
// The library is loaded once per process and never closed.
const std::vector<std::string> kNcclNames = {"libnccl.so.2", "libnccl.so"};
const std::vector<std::string> kCudartNames = {"libcudart.so.13", "libcudart.so.12",
                                               "libcudart.so"};
constexpr int kMinNcclVersion = NCCL_VERSION(2, 14, 0);

std::string names_str(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += cat(i ? ", " : "", names[i]);
  return out;
}

/// The first of `names` already loaded, else the first dlopen finds; null
/// when none loads, with every dlerror in `tried`.
void* open_first(const std::vector<std::string>& names, std::string& opened, std::string& tried) {
  for (const std::string& name : names) {
    if (void* lib = ::dlopen(name.c_str(), RTLD_NOW | RTLD_NOLOAD)) {
      opened = name;
      return lib;
    }
  }
  for (const std::string& name : names) {
    if (void* lib = ::dlopen(name.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      opened = name;
      return lib;
    }
    const char* error = ::dlerror();
    tried += cat(tried.empty() ? "" : "; ", error ? error : cat(name, ": not found"));
  }
  return nullptr;
}

template <typename Fn>
void resolve(void* lib, const char* name, Fn& fn, std::vector<std::string>& missing) {
  fn = reinterpret_cast<Fn>(::dlsym(lib, name));
  if (fn == nullptr) missing.emplace_back(name);
}

}  // namespace

std::unique_ptr<NcclApi> load_nccl_api(const std::vector<std::string>& nccl_names,
                                       const std::vector<std::string>& cudart_names) {
  auto api = std::make_unique<NcclApi>();
  std::string nccl_name, nccl_tried;
  void* nccl = open_first(nccl_names, nccl_name, nccl_tried);
  if (nccl == nullptr) {
    throw Error(cat("[collectives.nccl] cannot load NCCL: tried ", names_str(nccl_names), " (",
                    nccl_tried,
                    "); expected libnccl on the library search path (LD_LIBRARY_PATH): "
                    "PyTorch's CUDA wheels ship it (nvidia/nccl/lib), as does NVIDIA's NCCL "
                    "package"));
  }
  std::vector<std::string> missing;
  resolve(nccl, "ncclGetVersion", api->get_version, missing);
  resolve(nccl, "ncclGetUniqueId", api->get_unique_id, missing);
  resolve(nccl, "ncclCommInitRankConfig", api->comm_init_rank_config, missing);
  resolve(nccl, "ncclCommAbort", api->comm_abort, missing);
  resolve(nccl, "ncclCommGetAsyncError", api->comm_get_async_error, missing);
  resolve(nccl, "ncclGetErrorString", api->get_error_string, missing);
  resolve(nccl, "ncclGetLastError", api->get_last_error, missing);
  resolve(nccl, "ncclAllReduce", api->all_reduce, missing);
  resolve(nccl, "ncclAllGather", api->all_gather, missing);
  resolve(nccl, "ncclReduceScatter", api->reduce_scatter, missing);
  resolve(nccl, "ncclBroadcast", api->broadcast, missing);
  resolve(nccl, "ncclSend", api->send, missing);
  resolve(nccl, "ncclRecv", api->recv, missing);
  resolve(nccl, "ncclGroupStart", api->group_start, missing);
  resolve(nccl, "ncclGroupEnd", api->group_end, missing);
  if (!missing.empty()) {
    throw Error(cat("[collectives.nccl] ", nccl_name, " lacks ", names_str(missing),
                    ": expected NCCL 2.14 or newer"));
  }
  if (api->get_version(&api->version) != ncclSuccess || api->version < kMinNcclVersion) {
    throw Error(cat("[collectives.nccl] ", nccl_name, " is NCCL version code ", api->version,
                    ": expected NCCL 2.14 (code ", kMinNcclVersion, ") or newer"));
  }

  std::string cudart_name, cudart_tried;
  void* cudart = open_first(cudart_names, cudart_name, cudart_tried);
  if (cudart == nullptr) {
    throw Error(cat("[collectives.nccl] cannot load the CUDA runtime: tried ",
                    names_str(cudart_names), " (", cudart_tried,
                    "); expected libcudart on the library search path (LD_LIBRARY_PATH): "
                    "PyTorch's CUDA wheels ship it (nvidia/cuda_runtime/lib), as does the CUDA "
                    "toolkit"));
  }
  resolve(cudart, "cudaGetDeviceCount", api->cuda_get_device_count, missing);
  resolve(cudart, "cudaGetDevice", api->cuda_get_device, missing);
  resolve(cudart, "cudaSetDevice", api->cuda_set_device, missing);
  resolve(cudart, "cudaStreamQuery", api->cuda_stream_query, missing);
  resolve(cudart, "cudaGetErrorName", api->cuda_get_error_name, missing);
  resolve(cudart, "cudaGetErrorString", api->cuda_get_error_string, missing);
  if (!missing.empty()) {
    throw Error(cat("[collectives.nccl] ", cudart_name, " lacks ", names_str(missing),
                    ": expected a CUDA runtime library"));
  }
  const int v = api->version;
  api->description = cat("NCCL ", v / 10000, ".", v % 10000 / 100, ".", v % 100, " (", nccl_name,
                         "), CUDA runtime ", cudart_name);
  return api;
}

const NcclApi& nccl_api() {
  struct Loaded {
    std::unique_ptr<NcclApi> api;
    std::string failure;
  };
  static const Loaded loaded = [] {
    Loaded l;
    try {
      l.api = load_nccl_api(kNcclNames, kCudartNames);
    } catch (const std::exception& e) {
      l.failure = e.what();
    }
    return l;
  }();
  if (!loaded.api) throw Error(loaded.failure);
  return *loaded.api;
}

std::string cuda_error(const NcclApi& api, cudaError_t e) {
  return cat(api.cuda_get_error_string(e), " (", api.cuda_get_error_name(e), ")");
}

std::string nccl_error(const NcclApi& api, ncclResult_t r, ncclComm_t comm) {
  std::string out = cat(api.get_error_string(r), " (ncclResult_t ", static_cast<int>(r), ")");
  const char* last = api.get_last_error(comm);
  if (last != nullptr && last[0] != '\0') out += cat(": ", last);
  return out;
}

bool is_transport_failure(ncclResult_t r) {
  return r == ncclSystemError || r == ncclRemoteError;
}

/// Makes `device` this thread's current CUDA device for a scope and then
/// restores the previous one: stream 0 and NCCL's calls mean the current
/// device's (Note [NCCL streams]), and LibTorch on this thread may expect
/// its own.
CurrentDevice::CurrentDevice(const NcclApi& api, int device) : api_(api) {
  int previous = -1;
  if (api_.cuda_get_device(&previous) == cudaSuccess && previous == device) return;
  error_ = api_.cuda_set_device(device);
  if (error_ == cudaSuccess && previous >= 0) previous_ = previous;
}

CurrentDevice::~CurrentDevice() {
  if (previous_ >= 0) (void)api_.cuda_set_device(previous_);
}

void poll_pause(std::chrono::steady_clock::duration waited) {
  if (waited < 200us) {
    std::this_thread::yield();
  } else if (waited < 20ms) {
    std::this_thread::sleep_for(20us);
  } else {
    std::this_thread::sleep_for(500us);
  }
}

}  // namespace gt::worker::collectives

#endif  // GT_NCCL_BACKEND

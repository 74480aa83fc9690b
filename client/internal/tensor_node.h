#pragma once
// The shared node behind gt::Tensor handles.

#include <atomic>
#include <memory>
#include <mutex>

#include <gt/export.h>

#include "common/op_table.h"
#include "common/wire.h"

namespace gt::client {

class Session;
struct GradFn;
struct VersionCounter;

/// What every copy of a gt::Tensor shares: the session the tensor lives in,
/// its id, its metadata and its autograd record (Note [autograd record] in
/// autograd.h). Pinned (no copy or move). Destroying the node releases the id
/// into the session's batched Free (Note [tensor release batching] in
/// session.h): never blocks, never throws, a no-op once the session is shut
/// down. A node whose id is held by another node (Note [saved outputs]) leaves
/// the release to that node.
///
/// Thread-safety: the id and meta are immutable; the autograd fields are
/// guarded by autograd_mutex_ (requires_grad_ is atomic so that the op front
/// end can test it without locking).
class GT_API TensorNode {
 public:
  TensorNode(std::shared_ptr<Session> session, wire::TensorId id, TensorMeta meta,
             bool requires_grad);
  ~TensorNode();
  TensorNode(const TensorNode&) = delete;
  TensorNode& operator=(const TensorNode&) = delete;

  const std::shared_ptr<Session>& session() const { return session_; }
  wire::TensorId id() const { return id_; }
  const TensorMeta& meta() const { return meta_; }
  bool requires_grad() const { return requires_grad_.load(std::memory_order_acquire); }

 private:
  friend struct AutogradAccess;  // client/autograd.cpp

  std::shared_ptr<Session> session_;
  wire::TensorId id_;
  TensorMeta meta_;

  // ---- autograd record ----
  std::atomic<bool> requires_grad_;
  mutable std::mutex autograd_mutex_;
  std::shared_ptr<GradFn> grad_fn_;         // guarded; null for leaves
  std::shared_ptr<TensorNode> grad_;        // guarded; accumulated gradient of a leaf
  std::shared_ptr<VersionCounter> version_;  // guarded; created lazily
  // Set before the node is published, then immutable: the node that owns the
  // id when this one only shares it (Note [saved outputs]).
  std::shared_ptr<TensorNode> id_holder_;
};

}  // namespace gt::client

#pragma once
// The shared node behind gt::Tensor handles.

#include <memory>

#include <gt/export.h>

#include "common/op_table.h"
#include "common/wire.h"

namespace gt::client {

class Session;

/// What every copy of a gt::Tensor shares: the session the tensor lives in,
/// its id and its metadata. Pinned (no copy or move). Destroying the node
/// releases the id into the session's batched Free (Note [tensor release
/// batching] in session.h): never blocks, never throws, a no-op once the
/// session is shut down. The autograd record will live here too.
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
  bool requires_grad() const { return requires_grad_; }

 private:
  std::shared_ptr<Session> session_;
  wire::TensorId id_;
  TensorMeta meta_;
  bool requires_grad_;
};

}  // namespace gt::client

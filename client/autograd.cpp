// The autograd tape: grad mode, recording hooks, the backward engine and the
// Tensor methods of autograd (Note [autograd record] in internal/autograd.h).

#include "client/internal/autograd.h"

#include <atomic>
#include <cctype>
#include <optional>
#include <queue>
#include <unordered_map>

#include <gt/autograd.h>
#include <gt/error.h>

#include "client/internal/autograd_rules.h"
#include "client/internal/ops.h"
#include "client/internal/tensor_node.h"
#include "common/check.h"
#include "common/shape.h"

namespace gt {

namespace {
thread_local bool t_grad_enabled = true;
}  // namespace

bool is_grad_enabled() { return t_grad_enabled; }
void set_grad_enabled(bool enabled) { t_grad_enabled = enabled; }

namespace client {

// The autograd fields of TensorNode are private to the node and this file.
struct AutogradAccess {
  static std::shared_ptr<GradFn> grad_fn(const TensorNode& n) {
    std::lock_guard lock(n.autograd_mutex_);
    return n.grad_fn_;
  }
  static void set_history(TensorNode& n, std::shared_ptr<GradFn> fn) {
    {
      std::lock_guard lock(n.autograd_mutex_);
      n.grad_fn_ = std::move(fn);
    }
    n.requires_grad_.store(true, std::memory_order_release);
  }
  static void set_requires_grad(TensorNode& n, bool value) {
    n.requires_grad_.store(value, std::memory_order_release);
  }
  static std::shared_ptr<TensorNode> grad(const TensorNode& n) {
    std::lock_guard lock(n.autograd_mutex_);
    return n.grad_;
  }
  static std::mutex& mutex(const TensorNode& n) { return n.autograd_mutex_; }
  static std::shared_ptr<TensorNode>& grad_locked(TensorNode& n) { return n.grad_; }
  static std::shared_ptr<VersionCounter> counter(const TensorNode& n) {
    std::lock_guard lock(n.autograd_mutex_);
    return n.version_;
  }
  static std::shared_ptr<VersionCounter> ensure_counter(TensorNode& n) {
    std::lock_guard lock(n.autograd_mutex_);
    if (!n.version_) n.version_ = std::make_shared<VersionCounter>();
    return n.version_;
  }
  // Only before the node is published (it is still private to record_op).
  static void share_counter(TensorNode& n, std::shared_ptr<VersionCounter> c) {
    std::lock_guard lock(n.autograd_mutex_);
    n.version_ = std::move(c);
  }
  static void set_id_holder(TensorNode& n, std::shared_ptr<TensorNode> holder) {
    n.id_holder_ = std::move(holder);
  }
};

using A = AutogradAccess;

namespace {

std::atomic<uint64_t> g_next_sequence_nr{1};

// Ops whose worker kernel may return a tensor aliasing its input's storage
// (LibTorch views; reshape and view alias when the layout allows).
bool may_alias(OpCode code) {
  switch (code) {
    case OpCode::Reshape:
    case OpCode::View:
    case OpCode::Transpose:
    case OpCode::Slice:
    case OpCode::Unsqueeze:
    case OpCode::Squeeze:
    case OpCode::Permute:
    case OpCode::Expand:
    case OpCode::Alias:
    case OpCode::To:  // at::Tensor::to returns the input for the same dtype
      return true;
    default:
      return false;
  }
}

Edge edge_of(const std::shared_ptr<TensorNode>& n) {
  if (!n->requires_grad()) return {};
  if (auto fn = A::grad_fn(*n)) return {std::move(fn), nullptr};
  return {nullptr, n};
}

SavedTensor save(const std::shared_ptr<TensorNode>& n) {
  std::shared_ptr<VersionCounter> c = A::ensure_counter(*n);
  const uint32_t v = c->version.load(std::memory_order_acquire);
  return {n, std::move(c), v};
}

// Note [saved outputs]: the id moves to a holder node without history.
SavedTensor save_output(TensorNode& out) {
  auto holder = std::make_shared<TensorNode>(out.session(), out.id(), out.meta(), false);
  std::shared_ptr<VersionCounter> c = A::ensure_counter(out);
  A::share_counter(*holder, c);
  A::set_id_holder(out, holder);
  const uint32_t v = c->version.load(std::memory_order_acquire);
  return {std::move(holder), std::move(c), v};
}

uint32_t needs_mask(const std::vector<Edge>& next) {
  uint32_t mask = 0;
  for (size_t i = 0; i < next.size() && i < 31; ++i) {
    if (next[i].valid()) mask |= 1u << i;
  }
  return mask;
}

std::shared_ptr<GradFn> new_grad_fn(OpCode code, std::span<const int64_t> ints,
                                    std::span<const double> floats) {
  auto fn = std::make_shared<GradFn>();
  fn->op = code;
  fn->sequence_nr = g_next_sequence_nr.fetch_add(1, std::memory_order_relaxed);
  fn->ints.assign(ints.begin(), ints.end());
  fn->floats.assign(floats.begin(), floats.end());
  fn->scope = current_scope();  // the op is issued right after, on this thread
  return fn;
}

}  // namespace

std::string GradFn::name() const {
  std::string out;
  bool upper = true;
  for (char ch : op_info(op).name) {
    if (ch == '_') {
      upper = true;
      continue;
    }
    out.push_back(upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(ch))) : ch);
    upper = false;
  }
  return out + "Backward";
}

bool grad_mode_enabled() { return t_grad_enabled; }

void check_requires_grad_dtype(DType dtype, std::string_view op) {
  GT_CHECK(is_floating(dtype), "[client.", op,
           "] only tensors of floating dtype can require gradients, got ", to_string(dtype));
}

void record_op(OpCode code, std::span<const Tensor* const> inputs, const Tensor& output,
               std::span<const int64_t> ints, std::span<const double> floats) {
  TensorNode& out = *output.node();
  if (may_alias(code) && (code != OpCode::To || inputs[0]->dtype() == out.meta().dtype)) {
    // Note [version counters]: the alias shares its base's counter. detach()
    // (alias) is no view for autograd: in-place ops on either stay allowed.
    std::shared_ptr<VersionCounter> c = A::ensure_counter(*inputs[0]->node());
    if (code != OpCode::Alias) c->viewed.store(true, std::memory_order_release);
    A::share_counter(out, std::move(c));
  }
  if (!t_grad_enabled) return;
  bool any_requires_grad = false;
  for (const Tensor* t : inputs) any_requires_grad |= t->node()->requires_grad();
  if (!any_requires_grad || !is_floating(out.meta().dtype)) return;
  const BackwardRule& rule = backward_rule(code);
  if (!rule.differentiable) return;

  std::shared_ptr<GradFn> fn = new_grad_fn(code, ints, floats);
  fn->inputs.reserve(inputs.size());
  fn->next.reserve(inputs.size());
  for (const Tensor* t : inputs) {
    fn->inputs.push_back(t->node()->meta());
    fn->next.push_back(edge_of(t->node()));
  }
  fn->output = out.meta();
  const SaveMask mask = rule.save ? rule.save(needs_mask(fn->next)) : kSaveNothing;
  fn->saved_inputs.resize(inputs.size());
  for (size_t i = 0; i < inputs.size() && i < 31; ++i) {
    if (mask & (1u << i)) fn->saved_inputs[i] = save(inputs[i]->node());
  }
  if (mask & kSaveOutput) fn->saved_output = save_output(out);
  A::set_history(out, std::move(fn));
}

void record_inplace(OpCode code, const Tensor& self, std::span<const Tensor* const> others,
                    std::span<const int64_t> ints, std::span<const double> floats) {
  TensorNode& s = *self.node();
  const std::string_view op = op_info(code).name;
  bool others_require_grad = false;
  for (const Tensor* o : others) others_require_grad |= o->node()->requires_grad();
  const BackwardRule& rule = backward_rule(code);
  // As for out-of-place ops, only floating results carry history (a copy_ of
  // a float into an int tensor truncates: no gradient flows back).
  if (t_grad_enabled && is_floating(s.meta().dtype) && (s.requires_grad() || others_require_grad) &&
      rule.differentiable) {
    std::shared_ptr<GradFn> old_fn = A::grad_fn(s);
    GT_CHECK(old_fn || !s.requires_grad(), "[client.", op,
             "] a leaf tensor that requires grad is being used in an in-place operation; "
             "update it under gt::NoGradGuard (as optimizers do) or use the out-of-place op");
    const std::shared_ptr<VersionCounter> c = A::counter(s);
    GT_CHECK(!c || !c->viewed.load(std::memory_order_acquire), "[client.", op,
             "] in-place operation on a view, or on a tensor that has views, while "
             "recording gradients is not supported; use the out-of-place op (e.g. a + b for "
             "a.add_(b)) or run it under gt::NoGradGuard");
    std::shared_ptr<GradFn> fn = new_grad_fn(code, ints, floats);
    fn->inputs.push_back(s.meta());
    fn->next.push_back(edge_of(self.node()));
    for (const Tensor* o : others) {
      fn->inputs.push_back(o->node()->meta());
      fn->next.push_back(edge_of(o->node()));
    }
    fn->output = s.meta();
    fn->saved_inputs.resize(fn->inputs.size());
    const SaveMask mask = rule.save ? rule.save(needs_mask(fn->next)) : kSaveNothing;
    // The op overwrites self: a saved self (or an operand that is self) is a
    // copy of its current value.
    bool saves_self = mask & 1u;
    for (size_t i = 0; i < others.size(); ++i) {
      saves_self |= (mask & (2u << i)) && others[i]->node() == self.node();
    }
    if (saves_self) {
      NoGradGuard no_grad;
      Tensor before = self * 1;
      fn->saved_inputs[0] = save(before.node());
    }
    for (size_t i = 0; i < others.size(); ++i) {
      if (!(mask & (2u << i))) continue;
      fn->saved_inputs[i + 1] =
          others[i]->node() == self.node() ? fn->saved_inputs[0] : save(others[i]->node());
    }
    if (!(mask & 1u)) fn->saved_inputs[0] = SavedTensor{};
    A::set_history(s, std::move(fn));
  }
  if (auto c = A::counter(s)) c->version.fetch_add(1, std::memory_order_acq_rel);
}

// ---- engine -------------------------------------------------------------------------

namespace {

Tensor cast_to(Tensor g, DType dtype) { return g.dtype() == dtype ? g : g.to(dtype); }

// Adds a gradient into a buffer (out of place: gradients may be shared by
// several buffers, e.g. add's backward passes one tensor to both inputs).
void accumulate_into(Tensor& buffer, Tensor g) {
  buffer = buffer.defined() ? buffer + g : std::move(g);
}

// A gradient that may be stored as a leaf's .grad as is: nobody else holds it
// and it aliases no other tensor (an expand or a view of another gradient).
bool can_adopt(const Tensor& g) {
  if (g.node().use_count() != 1) return false;
  const auto c = A::counter(*g.node());
  return !c || !c->viewed.load(std::memory_order_acquire);
}

void accumulate_leaf(TensorNode& leaf, Tensor g) {
  g = cast_to(std::move(g), leaf.meta().dtype);
  GT_ASSERT(g.shape() == leaf.meta().shape, "[client.backward] gradient of shape ",
            shape_str(g.shape()), " for a leaf of shape ", shape_str(leaf.meta().shape));
  std::lock_guard lock(A::mutex(leaf));
  std::shared_ptr<TensorNode>& grad = A::grad_locked(leaf);
  if (grad) {
    grad = (Tensor(grad) + g).node();
  } else {
    grad = can_adopt(g) ? g.node() : (g * 1).node();
  }
}

struct FnTask {
  std::shared_ptr<GradFn> fn;
  int dependencies = 0;
  Tensor grad;
};

struct LeafTask {
  std::shared_ptr<TensorNode> leaf;
  int dependencies = 0;
  Tensor grad;
};

struct NewerFirst {
  bool operator()(const FnTask* a, const FnTask* b) const {
    return a->fn->sequence_nr < b->fn->sequence_nr;
  }
};

}  // namespace

void run_backward(const Tensor& root, const Tensor& gradient, bool retain_graph) {
  const TensorNode& r = node_of(root, "backward");
  GT_CHECK(r.requires_grad(), "[client.backward] the tensor does not require grad and has no "
           "grad_fn: nothing that requires grad contributed to it (shape ",
           shape_str(r.meta().shape), "); mark leaves with requires_grad_()");
  // Note [backward scopes]: the seed is the first op computing the root
  // op's gradients.
  std::shared_ptr<GradFn> root_fn = A::grad_fn(r);
  BackwardScopes backward_scopes;
  std::optional<ScopeOverride> seed_scope;
  if (root_fn) seed_scope.emplace(backward_scopes.map(root_fn->scope));
  Tensor grad = gradient;
  if (!grad.defined()) {
    GT_CHECK(numel(r.meta().shape) == 1,
             "[client.backward] grad can be implicitly created only for scalar outputs: the "
             "tensor has shape ", shape_str(r.meta().shape),
             "; pass a gradient of that shape to backward(gradient)");
    grad = gt::ones(r.meta().shape, r.meta().dtype);
  } else {
    GT_CHECK(grad.shape() == r.meta().shape, "[client.backward] the gradient has shape ",
             shape_str(grad.shape()), " but the tensor has shape ", shape_str(r.meta().shape));
    GT_CHECK(is_floating(grad.dtype()), "[client.backward] the gradient must be floating, got ",
             to_string(grad.dtype()));
  }
  NoGradGuard no_grad;
  grad = cast_to(std::move(grad), r.meta().dtype);
  seed_scope.reset();
  if (!root_fn) {
    accumulate_leaf(const_cast<TensorNode&>(r), std::move(grad));
    return;
  }

  // Discover the graph with an explicit stack and count, for every GradFn and
  // leaf, the edges that lead into it.
  std::unordered_map<const GradFn*, FnTask> fns;
  std::unordered_map<const TensorNode*, LeafTask> leaves;
  fns[root_fn.get()].fn = root_fn;
  std::vector<GradFn*> stack{root_fn.get()};
  while (!stack.empty()) {
    GradFn* fn = stack.back();
    stack.pop_back();
    for (const Edge& e : fn->next) {
      if (e.fn) {
        auto [it, inserted] = fns.try_emplace(e.fn.get());
        if (inserted) {
          it->second.fn = e.fn;
          stack.push_back(e.fn.get());
        }
        ++it->second.dependencies;
      } else if (e.leaf) {
        LeafTask& t = leaves[e.leaf.get()];
        t.leaf = e.leaf;
        ++t.dependencies;
      }
    }
  }

  // Run each GradFn once all of its consumers have delivered its gradient.
  std::priority_queue<FnTask*, std::vector<FnTask*>, NewerFirst> ready;
  FnTask& root_task = fns[root_fn.get()];
  root_task.grad = std::move(grad);
  ready.push(&root_task);
  while (!ready.empty()) {
    FnTask& task = *ready.top();
    ready.pop();
    GradFn& fn = *task.fn;
    const ScopeOverride in_backward_scope(backward_scopes.map(fn.scope));
    std::vector<Tensor> input_grads(fn.next.size());
    if (task.grad.defined()) {
      BackwardContext ctx(fn, std::move(task.grad));
      backward_rule(fn.op).backward(ctx);
      input_grads = std::move(ctx.grads);
      if (!retain_graph) {
        fn.saved_inputs.assign(fn.saved_inputs.size(), SavedTensor{});
        fn.saved_output = SavedTensor{};
        fn.released = true;
      }
    }
    for (size_t i = 0; i < fn.next.size(); ++i) {
      const Edge& e = fn.next[i];
      Tensor g = std::move(input_grads[i]);
      if (g.defined()) {
        g = cast_to(std::move(g), fn.inputs[i].dtype);
        GT_ASSERT(g.shape() == fn.inputs[i].shape, "[client.backward] ", fn.name(),
                  " produced a gradient of shape ", shape_str(g.shape()), " for input ", i,
                  " of shape ", shape_str(fn.inputs[i].shape));
      }
      if (e.fn) {
        FnTask& next = fns[e.fn.get()];
        if (g.defined()) accumulate_into(next.grad, std::move(g));
        if (--next.dependencies == 0) ready.push(&next);
      } else if (e.leaf) {
        LeafTask& leaf = leaves[e.leaf.get()];
        if (g.defined()) accumulate_into(leaf.grad, std::move(g));
        if (--leaf.dependencies == 0 && leaf.grad.defined()) {
          accumulate_leaf(*leaf.leaf, std::move(leaf.grad));
        }
      }
    }
  }
}

void set_grad(const Tensor& leaf, const Tensor& grad) {
  TensorNode& n = const_cast<TensorNode&>(node_of(leaf, "set_grad"));
  if (grad.defined()) {
    GT_CHECK(grad.shape() == n.meta().shape && grad.dtype() == n.meta().dtype,
             "[client.set_grad] expected a gradient of shape ", shape_str(n.meta().shape), " ",
             to_string(n.meta().dtype), ", got ", shape_str(grad.shape()), " ",
             to_string(grad.dtype()));
  }
  std::lock_guard lock(A::mutex(n));
  A::grad_locked(n) = grad.node();
}

std::shared_ptr<GradFn> grad_fn_of(const Tensor& t) {
  return t.defined() ? A::grad_fn(*t.node()) : nullptr;
}

uint32_t version_of(const Tensor& t) {
  if (!t.defined()) return 0;
  const auto c = A::counter(*t.node());
  return c ? c->version.load(std::memory_order_acquire) : 0;
}

}  // namespace client

// ---- Tensor's autograd methods ---------------------------------------------------------

using client::A;

Tensor& Tensor::requires_grad_(bool requires_grad) {
  client::TensorNode& n = const_cast<client::TensorNode&>(client::node_of(*this, "requires_grad_"));
  if (A::grad_fn(n)) {
    GT_CHECK(requires_grad, "[client.requires_grad_] you can only change requires_grad flags of "
             "leaf tensors; use detach() to get a tensor without history");
    return *this;
  }
  if (requires_grad) client::check_requires_grad_dtype(n.meta().dtype, "requires_grad_");
  A::set_requires_grad(n, requires_grad);
  return *this;
}

bool Tensor::is_leaf() const { return !node_ || !A::grad_fn(*node_); }

Tensor Tensor::grad() const {
  if (!node_) return Tensor();
  auto g = A::grad(*node_);
  return g ? Tensor(std::move(g)) : Tensor();
}

void Tensor::backward(const Tensor& gradient, bool retain_graph) const {
  client::run_backward(*this, gradient, retain_graph);
}

}  // namespace gt

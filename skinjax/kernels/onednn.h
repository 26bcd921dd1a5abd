// What skinjax's oneDNN handlers share: the CPU engine, memory over XLA's buffers, dtype
// mapping, a cache of primitives keyed by problem, and per-call scratch memory.

#ifndef SKINJAX_KERNELS_ONEDNN_H_
#define SKINJAX_KERNELS_ONEDNN_H_

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace skinjax {

inline const dnnl::engine& Engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// oneDNN memory over a buffer XLA owns.
inline dnnl::memory Wrap(const dnnl::memory::desc& desc, const void* data) {
  return dnnl::memory(desc, Engine(), const_cast<void*>(data));
}

// float32 and bfloat16 map to oneDNN's types, anything else to undef.
inline dnnl::memory::data_type ToDnnl(xla::ffi::DataType type) {
  switch (type) {
    case xla::ffi::DataType::F32:
      return dnnl::memory::data_type::f32;
    case xla::ffi::DataType::BF16:
      return dnnl::memory::data_type::bf16;
    default:
      return dnnl::memory::data_type::undef;
  }
}

// The plan `make(key)` built for `key`, built once: primitive creation is costly.
template <typename Plan, typename Key, typename Make>
const Plan& CachedPlan(const Key& key, Make make) {
  static std::mutex mutex;
  static std::map<Key, std::unique_ptr<Plan>> plans;
  std::lock_guard<std::mutex> lock(mutex);
  auto& plan = plans[key];
  if (!plan) plan = make(key);
  return *plan;
}

// Memory that oneDNN uses during one call (scratchpads, reordered kernels), 64-byte aligned.
class Scratch {
 public:
  explicit Scratch(size_t bytes)
      : data_(bytes ? std::aligned_alloc(64, (bytes + 63) / 64 * 64) : nullptr) {}
  ~Scratch() { std::free(data_); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get() const { return data_; }

 private:
  void* data_;
};

// A primitive and its descriptor, which names its memory (workspace, scratchpad).
template <typename Primitive>
struct PrimitivePlan {
  typename Primitive::primitive_desc pd;
  Primitive primitive;
};

template <typename Primitive>
std::unique_ptr<PrimitivePlan<Primitive>> MakePrimitivePlan(
    const typename Primitive::primitive_desc& pd) {
  return std::make_unique<PrimitivePlan<Primitive>>(PrimitivePlan<Primitive>{pd, Primitive(pd)});
}

// Runs the plan `make(problem)` builds (once, cached) on the arguments `args(pd)` names,
// adding the workspace XLA allocated (checked against the plan's size) and a scratchpad.
// oneDNN's errors become FFI errors.
template <typename Plan, typename Problem, typename Make, typename Args>
xla::ffi::Error RunCached(const Problem& problem, Make make, void* workspace,
                          size_t workspace_bytes, Args args) {
  try {
    const Plan& plan = CachedPlan<Plan>(problem, make);
    const auto& pd = plan.pd;
    if (workspace_bytes < pd.workspace_desc().get_size()) {
      return xla::ffi::Error::InvalidArgument("oneDNN: workspace too small");
    }
    Scratch scratchpad(pd.scratchpad_desc().get_size());
    std::unordered_map<int, dnnl::memory> arguments = args(pd);
    arguments.emplace(DNNL_ARG_WORKSPACE, Wrap(pd.workspace_desc(), workspace));
    arguments.emplace(DNNL_ARG_SCRATCHPAD, Wrap(pd.scratchpad_desc(), scratchpad.get()));
    dnnl::stream stream(Engine());
    plan.primitive.execute(stream, arguments);
    stream.wait();
  } catch (const dnnl::error& e) {
    return xla::ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return xla::ffi::Error::Success();
}

}  // namespace skinjax

#endif  // SKINJAX_KERNELS_ONEDNN_H_

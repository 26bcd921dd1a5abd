// What skinjax's oneDNN handlers share: the CPU engine, dtype mapping, a cache of
// primitives keyed by problem, and per-call scratch memory.

#ifndef SKINJAX_KERNELS_ONEDNN_H_
#define SKINJAX_KERNELS_ONEDNN_H_

#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace skinjax {

inline const dnnl::engine& Engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
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

}  // namespace skinjax

#endif  // SKINJAX_KERNELS_ONEDNN_H_

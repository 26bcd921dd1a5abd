// 2D convolutions through oneDNN, as XLA FFI handlers: forward, input gradient and
// kernel gradient of an NHWC x HWIO convolution, float32 or bfloat16 operands.
// Grouped convolutions (depthwise ones included) follow from the shapes: an HWIO kernel
// of I input channels on C-channel activations has C / I groups.
//
// Each handler takes two operands and writes one result; the result's shape and dtype,
// given by the caller, complete the problem. The forward pass can also add a float32
// bias per output channel and a residual of the result's shape, then apply ReLU, all on
// the accumulator before it is written (the inference form of conv + BatchNorm + ReLU).
// Primitives are created once per problem and cached; activations stay NHWC (oneDNN has
// fast kernels for it), kernels are reordered to and from oneDNN's blocked layout on
// every call (a small copy).
// Part of the extension skinjax/kernels/onednn.py loads after libdnnl.so.3.

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <unordered_map>

#include "onednn.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Tag = dnnl::memory::format_tag;
using Type = dnnl::memory::data_type;

namespace skinjax {
namespace {

enum class Pass { kForward, kBackwardData, kBackwardWeights };

// One convolution problem: oneDNN's logical shapes (NCHW; OIHW, or GOIHW with groups)
// and dtypes.
struct Problem {
  Pass pass;
  memory::dims src, weights, dst, strides, pad_begin, pad_end;
  Type src_type, weights_type, dst_type;  // of x, w and y, whichever are given or made
  bool bias = false, residual = false, relu = false;  // the forward pass's epilogue

  auto key() const {
    return std::make_tuple(static_cast<int>(pass), src, weights, dst, strides, pad_begin,
                           pad_end, static_cast<int>(src_type),
                           static_cast<int>(weights_type), static_cast<int>(dst_type), bias,
                           residual, relu);
  }
};

memory::desc BiasDesc(const Problem& p) { return memory::desc({p.dst[1]}, Type::f32, Tag::a); }

struct Plan {
  dnnl::primitive conv;
  memory::desc weights;       // the primitive's (blocked) kernel layout
  memory::desc user_weights;  // HWIO, as JAX holds it
  memory::desc scratchpad;
  std::unique_ptr<dnnl::reorder> reorder;  // between the two kernel layouts, if they differ
};

std::unique_ptr<Plan> MakePlan(const Problem& p) {
  const auto& engine = Engine();
  const memory::dims no_dilation = {0, 0};
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);  // thread-safe concurrent calls
  const memory::desc src(p.src, p.src_type, Tag::nhwc);
  const memory::desc dst(p.dst, p.dst_type, Tag::nhwc);
  const bool weights_out = p.pass == Pass::kBackwardWeights;
  // Kernels multiply in the activations' dtype: a float32 kernel given with bfloat16
  // activations becomes bfloat16 in the reorder to oneDNN's layout. The kernel gradient
  // is written in the dtype asked for (float32 for bfloat16 activations, too).
  const memory::desc any_weights(p.weights, weights_out ? p.weights_type : p.src_type,
                                 Tag::any);
  auto plan = std::make_unique<Plan>();
  // With groups, JAX's HWIO kernel (I per group, O = groups x O per group) is hwigo.
  const bool grouped = p.weights.size() == 5;
  plan->user_weights = memory::desc(p.weights, p.weights_type, grouped ? Tag::hwigo : Tag::hwio);
  // The forward descriptor, which the backward passes take as a hint.
  const memory::desc hint_weights(p.weights, p.src_type, Tag::any);
  dnnl::primitive_attr forward_attr = attr;
  dnnl::post_ops epilogue;
  if (p.residual) epilogue.append_binary(dnnl::algorithm::binary_add, dst);
  if (p.relu) epilogue.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
  forward_attr.set_post_ops(epilogue);
  const memory::desc bias = p.bias ? BiasDesc(p) : memory::desc();  // empty: no bias
  const dnnl::convolution_forward::primitive_desc forward(
      engine, dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, src,
      hint_weights, bias, dst, p.strides, no_dilation, p.pad_begin, p.pad_end, forward_attr);
  if (p.pass == Pass::kForward) {
    plan->conv = dnnl::convolution_forward(forward);
    plan->weights = forward.weights_desc();
    plan->scratchpad = forward.scratchpad_desc();
  } else if (p.pass == Pass::kBackwardData) {
    const dnnl::convolution_backward_data::primitive_desc pd(
        engine, dnnl::algorithm::convolution_direct, src, any_weights, dst, p.strides,
        no_dilation, p.pad_begin, p.pad_end, forward, attr);
    plan->conv = dnnl::convolution_backward_data(pd);
    plan->weights = pd.weights_desc();
    plan->scratchpad = pd.scratchpad_desc();
  } else {
    const dnnl::convolution_backward_weights::primitive_desc pd(
        engine, dnnl::algorithm::convolution_direct, src, any_weights, dst, p.strides,
        no_dilation, p.pad_begin, p.pad_end, forward, attr);
    plan->conv = dnnl::convolution_backward_weights(pd);
    plan->weights = pd.diff_weights_desc();
    plan->scratchpad = pd.scratchpad_desc();
  }
  if (plan->weights != plan->user_weights) {
    const auto& from = weights_out ? plan->weights : plan->user_weights;
    const auto& to = weights_out ? plan->user_weights : plan->weights;
    plan->reorder = std::make_unique<dnnl::reorder>(
        dnnl::reorder::primitive_desc(engine, from, engine, to));
  }
  return plan;
}

// The forward pass's epilogue operands; null where absent.
struct Epilogue {
  const void* bias = nullptr;      // float32, one per output channel
  const void* residual = nullptr;  // the result's shape and dtype
  bool relu = false;
};

// `a` and `b` are (x, w) forward, (dy, w) for the input gradient and (x, dy) for the
// kernel gradient; `out` is y, dx or dw.
ffi::Error Convolve(Pass pass, ffi::AnyBuffer a, ffi::AnyBuffer b,
                    ffi::Result<ffi::AnyBuffer> out, ffi::Span<const int64_t> strides,
                    ffi::Span<const int64_t> padding, const Epilogue& epilogue = {}) {
  ffi::AnyBuffer::Dimensions x, w, y;
  ffi::DataType x_type, w_type, y_type;
  if (pass == Pass::kForward) {
    x = a.dimensions(), w = b.dimensions(), y = out->dimensions();
    x_type = a.element_type(), w_type = b.element_type(), y_type = out->element_type();
  } else if (pass == Pass::kBackwardData) {
    y = a.dimensions(), w = b.dimensions(), x = out->dimensions();
    y_type = a.element_type(), w_type = b.element_type(), x_type = out->element_type();
  } else {
    x = a.dimensions(), y = b.dimensions(), w = out->dimensions();
    x_type = a.element_type(), y_type = b.element_type(), w_type = out->element_type();
  }
  if (x.size() != 4 || w.size() != 4 || y.size() != 4 || strides.size() != 2 ||
      padding.size() != 4) {
    return ffi::Error::InvalidArgument(
        "onednn conv: expected NHWC and HWIO operands, 2 strides and 4 paddings");
  }
  if (w[2] <= 0 || x[3] % w[2] != 0 || w[3] % (x[3] / w[2]) != 0) {
    return ffi::Error::InvalidArgument(
        "onednn conv: the kernel's input channels must divide the activations' and the "
        "groups they make must divide its output channels");
  }
  const int64_t groups = x[3] / w[2];
  const memory::dims weights =
      groups == 1 ? memory::dims{w[3], w[2], w[0], w[1]}
                  : memory::dims{groups, w[3] / groups, w[2], w[0], w[1]};
  Problem p{pass,
            {x[0], x[3], x[1], x[2]},
            weights,
            {y[0], y[3], y[1], y[2]},
            {strides[0], strides[1]},
            {padding[0], padding[2]},
            {padding[1], padding[3]},
            ToDnnl(x_type),
            ToDnnl(w_type),
            ToDnnl(y_type),
            epilogue.bias != nullptr,
            epilogue.residual != nullptr,
            epilogue.relu};
  if (p.src_type == Type::undef || p.weights_type == Type::undef || p.dst_type == Type::undef) {
    return ffi::Error::InvalidArgument("onednn conv: float32 or bfloat16 buffers only");
  }
  try {
    const Plan& plan = CachedPlan<Plan>(p.key(), [&p](const auto&) { return MakePlan(p); });
    const auto& engine = Engine();
    dnnl::stream stream(engine);
    Scratch scratchpad(plan.scratchpad.get_size());
    Scratch weights(plan.reorder ? plan.weights.get_size() : 0);
    memory scratchpad_mem(plan.scratchpad, engine, scratchpad.get());
    const memory::desc src(p.src, p.src_type, Tag::nhwc), dst(p.dst, p.dst_type, Tag::nhwc);
    void* w_data = pass == Pass::kBackwardWeights ? out->untyped_data() : b.untyped_data();
    memory user_w(plan.user_weights, engine, w_data);
    memory w_mem = plan.reorder ? memory(plan.weights, engine, weights.get()) : user_w;
    if (pass == Pass::kForward) {
      if (plan.reorder) plan.reorder->execute(stream, user_w, w_mem);
      std::unordered_map<int, memory> args = {
          {DNNL_ARG_SRC, memory(src, engine, a.untyped_data())},
          {DNNL_ARG_WEIGHTS, w_mem},
          {DNNL_ARG_DST, memory(dst, engine, out->untyped_data())},
          {DNNL_ARG_SCRATCHPAD, scratchpad_mem}};
      if (p.bias) {
        args.emplace(DNNL_ARG_BIAS, memory(BiasDesc(p), engine, const_cast<void*>(epilogue.bias)));
      }
      if (p.residual) {
        args.emplace(DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1,
                     memory(dst, engine, const_cast<void*>(epilogue.residual)));
      }
      plan.conv.execute(stream, args);
    } else if (pass == Pass::kBackwardData) {
      if (plan.reorder) plan.reorder->execute(stream, user_w, w_mem);
      plan.conv.execute(stream, {{DNNL_ARG_DIFF_DST, memory(dst, engine, a.untyped_data())},
                                 {DNNL_ARG_WEIGHTS, w_mem},
                                 {DNNL_ARG_DIFF_SRC, memory(src, engine, out->untyped_data())},
                                 {DNNL_ARG_SCRATCHPAD, scratchpad_mem}});
    } else {
      plan.conv.execute(stream, {{DNNL_ARG_SRC, memory(src, engine, a.untyped_data())},
                                 {DNNL_ARG_DIFF_DST, memory(dst, engine, b.untyped_data())},
                                 {DNNL_ARG_DIFF_WEIGHTS, w_mem},
                                 {DNNL_ARG_SCRATCHPAD, scratchpad_mem}});
      if (plan.reorder) plan.reorder->execute(stream, w_mem, user_w);
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error::Internal(std::string("oneDNN: ") + e.what());
  }
  return ffi::Error::Success();
}

template <Pass pass>
ffi::Error Handler(ffi::AnyBuffer a, ffi::AnyBuffer b, ffi::Result<ffi::AnyBuffer> out,
                   ffi::Span<const int64_t> strides, ffi::Span<const int64_t> padding) {
  return Convolve(pass, a, b, out, strides, padding);
}

// The forward pass: x, w, then optionally the bias and after it the residual.
ffi::Error Forward(ffi::AnyBuffer x, ffi::AnyBuffer w, ffi::RemainingArgs extras,
                   ffi::Result<ffi::AnyBuffer> y, ffi::Span<const int64_t> strides,
                   ffi::Span<const int64_t> padding, bool relu) {
  Epilogue epilogue{nullptr, nullptr, relu};
  if (extras.size() > 2) {
    return ffi::Error::InvalidArgument("onednn conv: at most a bias and a residual follow");
  }
  for (size_t i = 0; i < extras.size(); ++i) {
    const auto buffer = extras.get<ffi::AnyBuffer>(i);
    if (buffer.has_error()) return buffer.error();
    const bool bias = i == 0;
    const auto dims = y->dimensions();
    const bool valid =
        bias ? buffer->element_type() == ffi::DataType::F32 && dims.size() == 4 &&
                   static_cast<int64_t>(buffer->element_count()) == dims[3]
             : buffer->element_type() == y->element_type() &&
                   buffer->size_bytes() == y->size_bytes();
    if (!valid) {
      return ffi::Error::InvalidArgument(
          "onednn conv: a float32 bias per output channel, a residual like the result");
    }
    (bias ? epilogue.bias : epilogue.residual) = buffer->untyped_data();
  }
  return Convolve(Pass::kForward, x, w, y, strides, padding, epilogue);
}

}  // namespace
}  // namespace skinjax

XLA_FFI_DEFINE_HANDLER_SYMBOL(ConvForward, skinjax::Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .RemainingArgs()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<ffi::Span<const int64_t>>("strides")
                                  .Attr<ffi::Span<const int64_t>>("padding")
                                  .Attr<bool>("relu"));

#define SKINJAX_CONV_HANDLER(symbol, pass)                        \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(symbol, skinjax::Handler<pass>,   \
                                ffi::Ffi::Bind()                  \
                                    .Arg<ffi::AnyBuffer>()        \
                                    .Arg<ffi::AnyBuffer>()        \
                                    .Ret<ffi::AnyBuffer>()        \
                                    .Attr<ffi::Span<const int64_t>>("strides") \
                                    .Attr<ffi::Span<const int64_t>>("padding"));

SKINJAX_CONV_HANDLER(ConvBackwardData, skinjax::Pass::kBackwardData)
SKINJAX_CONV_HANDLER(ConvBackwardWeights, skinjax::Pass::kBackwardWeights)

// Whether oneDNN runs bfloat16 convolutions on this CPU (AVX-512 or newer; not on AVX2
// alone), as a small forward problem whose primitive it can or cannot create.
extern "C" bool SupportsBFloat16() {
  try {
    const memory::desc x({1, 16, 8, 8}, Type::bf16, Tag::nhwc);
    const memory::desc w({16, 16, 3, 3}, Type::bf16, Tag::any);
    const dnnl::convolution_forward::primitive_desc pd(
        skinjax::Engine(), dnnl::prop_kind::forward_training,
        dnnl::algorithm::convolution_direct, x, w, memory::desc(), x, {1, 1}, {0, 0}, {1, 1},
        {1, 1});
    return true;
  } catch (const dnnl::error&) {
    return false;
  }
}

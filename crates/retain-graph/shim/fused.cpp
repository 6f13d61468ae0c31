// Fused elementwise CUDA kernels for retain, through libtorch's jiterator: the kernel's
// source is compiled by NVRTC at its first launch (and cached in memory and on disk by
// libtorch), then launched on the current stream like any ATen kernel, so it can be captured
// in a CUDA graph once it has run eagerly. Inputs broadcast and promote as in a TensorIterator
// op; the extra arguments are int64 scalars passed by value after the tensor arguments.

#include <ATen/core/Tensor.h>
#include <ATen/cuda/jiterator.h>
#include <c10/util/SmallVector.h>

#include <cstdint>

#include "guard.h"

extern "C" {

// `inputs` are `n_inputs` pointers to at::Tensor (tch's tensors); `*out` receives a new
// at::Tensor the caller owns.
int retain_fused_elementwise(const char* code, const char* name, void* const* inputs,
                             int n_inputs, const int64_t* extras, int n_extras, void** out,
                             char* error, size_t len) {
  return retain_shim::guarded(error, len, [&] {
    c10::SmallVector<at::Tensor> tensors;
    for (int i = 0; i < n_inputs; ++i) tensors.push_back(*static_cast<at::Tensor*>(inputs[i]));
    c10::SmallVector<at::Scalar> scalars;
    for (int i = 0; i < n_extras; ++i) scalars.emplace_back(static_cast<int64_t>(extras[i]));
    auto outputs = at::cuda::CompileAndLaunchKernel(code, name, 1, tensors, scalars, false);
    *out = new at::Tensor(std::move(outputs[0]));
  });
}

}  // extern "C"

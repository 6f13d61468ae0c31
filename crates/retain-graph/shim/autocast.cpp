// bf16 autocast for retain, over at::autocast.
//
// tch's `autocast` switches CUDA autocast on with libtorch's default CUDA dtype (fp16) and
// never on the CPU; these entry points choose the device type and bf16. Autocast state is
// thread-local, like PyTorch's `torch.autocast` context. The cast cache stays off: PyTorch
// asks for `cache_enabled=False` under CUDA-graph capture, and a training step casts each
// weight once anyway.

#include <ATen/autocast_mode.h>

extern "C" {

// Enters a bf16 autocast region for the device type (`cuda` non-zero: CUDA, else CPU);
// returns the previous enabled state, for `retain_autocast_exit`.
int retain_autocast_enter(int cuda) {
  try {
    const auto type = cuda ? at::kCUDA : at::kCPU;
    const bool previous = at::autocast::is_autocast_enabled(type);
    at::autocast::set_autocast_dtype(type, at::kBFloat16);
    at::autocast::set_autocast_enabled(type, true);
    at::autocast::set_autocast_cache_enabled(false);
    at::autocast::increment_nesting();
    return previous ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

// Leaves the region `retain_autocast_enter` opened, restoring the previous enabled state.
void retain_autocast_exit(int cuda, int previous) {
  try {
    const auto type = cuda ? at::kCUDA : at::kCPU;
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(type, previous != 0);
  } catch (...) {
  }
}

}  // extern "C"

//! Channels-last memory layout: telling it, making it, and the memory-order flattening and
//! views through which the flat buffers keep each variable's layout.

use tch::Tensor;

/// Whether `t` is a 4-D `[N, C, H, W]` tensor stored channels-last (`[N, H, W, C]` in memory,
/// PyTorch's `torch.channels_last`). As PyTorch's `is_contiguous(memory_format=...)`, the
/// strides of size-1 dimensions do not count: a 1×1 kernel, or one input channel, is stored
/// the same either way and is both.
pub fn is_channels_last(t: &Tensor) -> bool {
    let size = t.size();
    if size.len() != 4 {
        return false;
    }
    let stride = t.stride();
    let mut expected = 1;
    for dim in [1, 3, 2, 0] {
        if size[dim] != 1 && stride[dim] != expected {
            return false;
        }
        expected *= size[dim];
    }
    true
}

/// A channels-last copy of the 4-D tensor `t` (same sizes and values).
pub fn channels_last(t: &Tensor) -> Tensor {
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// `t`'s elements flattened in the memory order of `layout` (a tensor of the same sizes):
/// channels-last order for a channels-last `layout`, row-major otherwise.
pub(super) fn in_memory_order(t: &Tensor, layout: &Tensor) -> Tensor {
    if is_channels_last(layout) && t.dim() == 4 {
        t.permute([0, 2, 3, 1]).reshape([-1])
    } else {
        t.reshape([-1])
    }
}

/// A view of `slice` (`like.numel()` elements in `like`'s memory order) with `like`'s sizes
/// and layout.
pub(super) fn view_like(slice: &Tensor, like: &Tensor) -> Tensor {
    let size = like.size();
    if is_channels_last(like) {
        slice
            .view([size[0], size[2], size[3], size[1]])
            .permute([0, 3, 1, 2])
    } else {
        slice.view(size.as_slice())
    }
}

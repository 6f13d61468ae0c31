//! Fused elementwise CUDA kernels: a chain of integer or float operations as one kernel.
//!
//! A captured step is bound by the number of kernels it launches (each costs a few
//! microseconds on the GPU even inside a graph), and small per-step bookkeeping written as
//! tensor operations — a hash for a random draw, the reservoir's slot rule — launches one
//! kernel per operation. libtorch's jiterator compiles an elementwise function given as CUDA
//! C++ source with NVRTC at its first launch (cached in memory, and on disk under
//! `~/.cache/torch/kernels`) and launches it through a TensorIterator like any ATen kernel: on
//! the current stream, with broadcasting and type promotion, so it is captured in a CUDA graph
//! like the rest of the step (the first launch, which compiles, happens in the eager warm-up).
//! `shim/fused.cpp` binds it.
//!
//! A kernel is a `template <typename T> T name(T a, …, int64_t extra, …)` function: one
//! argument per input tensor, in the inputs' common dtype, then the int64 extra arguments.
//! [`Elementwise::launch`] answers `None` where fused kernels cannot run (the inputs are not
//! on a CUDA device, the shim is not in this build, `RETAIN_FUSED_DISABLE` is set) and the
//! caller computes the same values with tensor operations; every kernel here is written to give
//! those operations' exact bits, so which path ran never shows in a result. A launch that
//! fails (NVRTC missing, say) is reported once on stderr and turns fused kernels off for the
//! process.

use std::ffi::{CString, c_char, c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};

use tch::Tensor;

use crate::{GraphError, call};

/// One fused elementwise kernel: its function name and CUDA C++ source.
#[derive(Debug, Clone, Copy)]
pub struct Elementwise {
    name: &'static str,
    code: &'static str,
}

/// Set once a launch failed: from then on every launch answers `None`.
static FAILED: AtomicBool = AtomicBool::new(false);

/// Whether fused kernels run in this build and process (not whether a device is present).
pub fn fused_available() -> bool {
    cfg!(retain_graph_shim)
        && !FAILED.load(Ordering::Relaxed)
        && std::env::var_os("RETAIN_FUSED_DISABLE").is_none()
}

impl Elementwise {
    /// The kernel `name` defined in `code` (see the module docs for its signature).
    pub const fn new(name: &'static str, code: &'static str) -> Self {
        Self { name, code }
    }

    /// The kernel applied to `inputs` (broadcast together, at most 8, all on one CUDA
    /// device) with the int64 `extras`: a new tensor of the inputs' broadcast shape and common
    /// dtype. `None` where fused kernels cannot run (see the module docs).
    pub fn launch(&self, inputs: &[&Tensor], extras: &[i64]) -> Option<Tensor> {
        if inputs.is_empty()
            || inputs.len() > 8
            || !inputs.iter().all(|t| t.device().is_cuda())
            || !fused_available()
        {
            return None;
        }
        match self.try_launch(inputs, extras) {
            Ok(out) => Some(out),
            Err(why) => {
                if !FAILED.swap(true, Ordering::Relaxed) {
                    eprintln!(
                        "warning: fused kernel `{}` failed ({why}); using unfused tensor \
                         operations from now on",
                        self.name
                    );
                }
                None
            }
        }
    }

    fn try_launch(&self, inputs: &[&Tensor], extras: &[i64]) -> Result<Tensor, GraphError> {
        let code = CString::new(self.code).map_err(|e| GraphError(e.to_string()))?;
        let name = CString::new(self.name).map_err(|e| GraphError(e.to_string()))?;
        let pointers: Vec<*mut c_void> = inputs.iter().map(|t| t.as_ptr() as *mut c_void).collect();
        let mut out: *mut c_void = std::ptr::null_mut();
        call(|error, len| {
            // SAFETY: `code` and `name` are NUL-terminated and outlive the call; `pointers`
            // are tch tensors (`at::Tensor*`) borrowed for the call, which the shim only
            // copies (a reference count); `extras` is read for `extras.len()` values. The shim
            // catches every C++ exception.
            unsafe {
                ffi::retain_fused_elementwise(
                    code.as_ptr(),
                    name.as_ptr(),
                    pointers.as_ptr(),
                    pointers.len() as c_int,
                    extras.as_ptr(),
                    extras.len() as c_int,
                    &mut out,
                    error,
                    len,
                )
            }
        })?;
        // SAFETY: on success the shim stored a new `at::Tensor*` in `out`, owned by nobody
        // else; `Tensor::from_ptr` takes that ownership (and frees it on drop).
        Ok(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) })
    }
}

#[cfg(retain_graph_shim)]
mod ffi {
    use super::{c_char, c_int, c_void};
    unsafe extern "C" {
        #[allow(clippy::too_many_arguments)]
        pub fn retain_fused_elementwise(
            code: *const c_char,
            name: *const c_char,
            inputs: *const *mut c_void,
            n_inputs: c_int,
            extras: *const i64,
            n_extras: c_int,
            out: *mut *mut c_void,
            error: *mut c_char,
            len: usize,
        ) -> c_int;
    }
}

/// Without the shim [`fused_available`] is false and nothing is launched; this keeps the call
/// type-checked.
#[cfg(not(retain_graph_shim))]
#[allow(clippy::missing_safety_doc, clippy::too_many_arguments)]
mod ffi {
    use super::{c_char, c_int, c_void};
    pub unsafe fn retain_fused_elementwise(
        _: *const c_char,
        _: *const c_char,
        _: *const *mut c_void,
        _: c_int,
        _: *const i64,
        _: c_int,
        _: *mut *mut c_void,
        _: *mut c_char,
        _: usize,
    ) -> c_int {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    const AXPY: Elementwise = Elementwise::new(
        "retain_test_axpy",
        "template <typename T> T retain_test_axpy(T x, T y, int64_t a) { return x * T(a) + y; }",
    );

    /// CPU inputs never launch; on CUDA the kernel broadcasts its inputs and takes its extra
    /// argument, and equals the same tensor operations.
    #[test]
    fn cpu_inputs_fall_back_and_cuda_inputs_run_fused() {
        let x = Tensor::arange(6, (Kind::Int64, Device::Cpu)).view([2, 3]);
        let y = Tensor::from_slice(&[10i64, 20, 30]);
        assert!(AXPY.launch(&[&x, &y], &[3]).is_none());
        if !tch::Cuda::is_available() {
            if std::env::var_os("RETAIN_REQUIRE_CUDA").is_some() {
                panic!("RETAIN_REQUIRE_CUDA is set but no CUDA device is visible");
            }
            eprintln!("CUDA half skipped: no CUDA device");
            return;
        }
        assert!(fused_available(), "the shim is built wherever CUDA is");
        let cuda = Device::Cuda(0);
        let fused = AXPY
            .launch(&[&x.to_device(cuda), &y.to_device(cuda)], &[3])
            .expect("CUDA inputs run fused");
        assert_eq!(fused.size(), vec![2, 3]);
        assert_eq!(fused.kind(), Kind::Int64);
        assert_eq!(fused.to_device(Device::Cpu), &x * 3 + &y);
    }
}

//! bf16 autocast regions (`[training] precision = "bf16"`), on CUDA and on the CPU.
//!
//! Inside a region libtorch runs the operations of its lower-precision list (convolutions,
//! matrix products, linear layers) in bfloat16 and keeps the others (softmax, losses,
//! normalisation statistics) in float32, on float32 weights: PyTorch's
//! `torch.autocast(device_type, dtype=torch.bfloat16)`. The weights, their gradients and the
//! optimiser state stay float32 (the master copy). tch's own `autocast` only knows CUDA's
//! default dtype (fp16), so a small shim (`shim/autocast.cpp`) sets the device type and bf16.

use std::ffi::c_int;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use tch::Device;

use crate::GraphError;

/// Whether bf16 autocast regions can be opened in this build (the shim needs only
/// libtorch's headers); otherwise why not.
pub fn autocast_availability() -> Result<(), GraphError> {
    if cfg!(retain_autocast_shim) {
        Ok(())
    } else {
        Err(GraphError(env!("RETAIN_AUTOCAST_BUILD").to_owned()))
    }
}

/// Runs `work` inside a bf16 autocast region for `device`'s type, restoring the previous state
/// afterwards (also when `work` panics).
pub fn with_bf16_autocast<T>(device: Device, work: impl FnOnce() -> T) -> Result<T, GraphError> {
    autocast_availability()?;
    let cuda = c_int::from(device.is_cuda());
    // SAFETY: the shim only flips libtorch's thread-local autocast state and catches every
    // C++ exception; `exit` is called exactly once for each successful `enter`.
    let previous = unsafe { ffi::retain_autocast_enter(cuda) };
    if previous < 0 {
        return Err(GraphError("entering the autocast region failed".into()));
    }
    let outcome = catch_unwind(AssertUnwindSafe(work));
    // SAFETY: as above.
    unsafe { ffi::retain_autocast_exit(cuda, previous) };
    outcome.map_err(|panic| resume_unwind(panic))
}

#[cfg(retain_autocast_shim)]
mod ffi {
    use std::ffi::c_int;
    unsafe extern "C" {
        pub fn retain_autocast_enter(cuda: c_int) -> c_int;
        pub fn retain_autocast_exit(cuda: c_int, previous: c_int);
    }
}

/// Without the shim no region is opened ([`autocast_availability`] refuses first).
#[cfg(not(retain_autocast_shim))]
#[allow(clippy::missing_safety_doc)]
mod ffi {
    use std::ffi::c_int;
    pub unsafe fn retain_autocast_enter(_: c_int) -> c_int {
        -1
    }
    pub unsafe fn retain_autocast_exit(_: c_int, _: c_int) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    /// A linear layer runs in bf16 inside the region and in f32 outside, on f32 weights; the
    /// gradient reaching the f32 weight is f32. The CPU half runs everywhere the shim is built
    /// (it needs only libtorch's headers, which every build has).
    #[test]
    fn linear_runs_in_bf16_inside_and_f32_outside() {
        autocast_availability().expect("the autocast shim is built with libtorch's headers");
        let mut devices = vec![Device::Cpu];
        if tch::Cuda::is_available() {
            devices.push(Device::Cuda(0));
        }
        for device in devices {
            let opts = (Kind::Float, device);
            let x = Tensor::ones([4, 3], opts);
            let w = Tensor::ones([2, 3], opts).set_requires_grad(true);
            let inside = with_bf16_autocast(device, || x.linear::<Tensor>(&w, None)).unwrap();
            assert_eq!(inside.kind(), Kind::BFloat16, "{device:?}");
            assert_eq!(x.linear::<Tensor>(&w, None).kind(), Kind::Float);
            inside.to_kind(Kind::Float).sum(Kind::Float).backward();
            assert_eq!(w.grad().kind(), Kind::Float);
            assert_eq!(w.kind(), Kind::Float);
            // Nested regions restore what was there before.
            let nested = with_bf16_autocast(device, || {
                with_bf16_autocast(device, || ()).unwrap();
                x.linear::<Tensor>(&w, None).kind()
            })
            .unwrap();
            assert_eq!(nested, Kind::BFloat16);
            assert_eq!(x.linear::<Tensor>(&w, None).kind(), Kind::Float);
        }
    }
}

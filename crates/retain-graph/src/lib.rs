//! CUDA-graph capture and replay of libtorch work: record a training step's kernels once and
//! relaunch them all with one call, instead of one host launch per kernel. Also bf16
//! autocast regions ([`with_bf16_autocast`]) and fused elementwise kernels compiled at run
//! time ([`Elementwise`]), the other libtorch C++ APIs tch does not bind as retain needs them.
//!
//! tch does not wrap `at::cuda::CUDAGraph`, so a small C++ shim (`shim/graph.cpp`, compiled
//! by `build.rs` against the libtorch headers tch uses) does, and this crate is its safe face.
//! It is the only crate of the workspace with `unsafe`: the `extern "C"` calls below, each on a
//! pointer this crate owns for its whole life. Every shim function catches C++ exceptions and
//! returns them as a message, so nothing unwinds across the boundary.
//!
//! Without CUDA in the libtorch in use, or without the CUDA runtime headers at build time, the
//! shim is not built and [`availability`] says why; with the shim but no GPU at run time it
//! says that. Callers fall back to eager execution either way.
//!
//! The rules a captured region must follow (PyTorch's): every tensor it reads or writes
//! exists before capture and keeps its storage (inputs change only by in-place copies before
//! [`Graph::replay`]); no host synchronisation (no `.item()`, no host reads, no allocation that
//! syncs); the same shapes every replay. Warm up the region eagerly on the side stream
//! ([`Graph::on_side_stream`]) before capturing it, so libraries allocate their workspaces
//! outside the graph.

mod autocast;
mod fused;

pub use autocast::{autocast_availability, with_bf16_autocast};
pub use fused::{Elementwise, fused_available};

use std::ffi::{c_char, c_int, c_void};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};

use tch::Device;

/// Why a graph could not be made, captured or replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphError(pub String);

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GraphError {}

/// Whether graphs can be captured on `device`: `Ok` where they can, otherwise why not (no
/// shim in this build, not a CUDA device, no CUDA device visible).
pub fn availability(device: Device) -> Result<(), GraphError> {
    if !cfg!(retain_graph_shim) {
        return Err(GraphError(env!("RETAIN_GRAPH_BUILD").to_owned()));
    }
    match device {
        Device::Cuda(n) if tch::Cuda::is_available() && n < tch::Cuda::device_count() as usize => {
            Ok(())
        }
        Device::Cuda(n) => Err(GraphError(format!("cuda:{n} is not available"))),
        other => Err(GraphError(format!("{other:?} is not a CUDA device"))),
    }
}

/// How this build handles graphs, for `retain doctor`.
pub fn build_note() -> &'static str {
    env!("RETAIN_GRAPH_BUILD")
}

const ERROR_LEN: usize = 1024;

/// One CUDA graph on one device, with the side stream it is captured on.
pub struct Graph {
    handle: *mut c_void,
    captured: bool,
}

impl Graph {
    /// A new, empty graph on `device` (see [`availability`]).
    pub fn new(device: Device) -> Result<Self, GraphError> {
        availability(device)?;
        let Device::Cuda(index) = device else {
            unreachable!("availability accepts only CUDA devices")
        };
        let mut handle = std::ptr::null_mut();
        call(|error, len| unsafe {
            ffi::retain_graph_new(index as c_int, &mut handle, error, len)
        })?;
        Ok(Graph {
            handle,
            captured: false,
        })
    }

    /// Runs `work` eagerly with the graph's side stream current (warm-up before a capture),
    /// then restores the previous stream, also when `work` panics (the panic continues).
    pub fn on_side_stream<T>(&mut self, work: impl FnOnce() -> T) -> Result<T, GraphError> {
        let handle = self.handle;
        call(|e, l| unsafe { ffi::retain_graph_enter_side_stream(handle, e, l) })?;
        let result = catch_unwind(AssertUnwindSafe(work));
        call(|e, l| unsafe { ffi::retain_graph_leave_side_stream(handle, e, l) })?;
        result.map_err(|panic| resume_unwind(panic))
    }

    /// Records the kernels `work` launches, on the side stream; nothing runs until
    /// [`Graph::replay`]. A panic inside `work` (an operation that cannot be captured) ends
    /// the capture and comes back as an error; the graph is then unusable.
    pub fn capture(&mut self, work: impl FnOnce()) -> Result<(), GraphError> {
        if self.captured {
            return Err(GraphError("this graph is already captured".into()));
        }
        let handle = self.handle;
        call(|e, l| unsafe { ffi::retain_graph_enter_side_stream(handle, e, l) })?;
        let begun = call(|e, l| unsafe { ffi::retain_graph_capture_begin(handle, e, l) });
        let outcome = begun.and_then(|()| {
            let worked = catch_unwind(AssertUnwindSafe(work));
            let ended = call(|e, l| unsafe { ffi::retain_graph_capture_end(handle, e, l) });
            match worked {
                Ok(()) => ended,
                Err(panic) => Err(GraphError(format!(
                    "the region could not be captured: {}",
                    panic_message(&panic)
                ))),
            }
        });
        let left = call(|e, l| unsafe { ffi::retain_graph_leave_side_stream(handle, e, l) });
        outcome?;
        left?;
        self.captured = true;
        Ok(())
    }

    /// Launches the captured kernels on the current stream.
    pub fn replay(&self) -> Result<(), GraphError> {
        if !self.captured {
            return Err(GraphError("replay before capture".into()));
        }
        let handle = self.handle;
        call(|e, l| unsafe { ffi::retain_graph_replay(handle, e, l) })
    }

    pub fn is_captured(&self) -> bool {
        self.captured
    }
}

impl Drop for Graph {
    fn drop(&mut self) {
        unsafe { ffi::retain_graph_free(self.handle) }
    }
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Graph")
            .field("captured", &self.captured)
            .finish()
    }
}

/// Calls a shim function with an error buffer; its non-zero status becomes the message.
fn call(f: impl FnOnce(*mut c_char, usize) -> c_int) -> Result<(), GraphError> {
    let mut buffer = vec![0 as c_char; ERROR_LEN];
    if f(buffer.as_mut_ptr(), ERROR_LEN) == 0 {
        return Ok(());
    }
    let bytes: Vec<u8> = buffer
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Err(GraphError(String::from_utf8_lossy(&bytes).into_owned()))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".into())
}

#[cfg(retain_graph_shim)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};
    unsafe extern "C" {
        pub fn retain_graph_new(
            device: c_int,
            out: *mut *mut c_void,
            error: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn retain_graph_free(graph: *mut c_void);
        pub fn retain_graph_enter_side_stream(
            graph: *mut c_void,
            error: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn retain_graph_leave_side_stream(
            graph: *mut c_void,
            error: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn retain_graph_capture_begin(
            graph: *mut c_void,
            error: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn retain_graph_capture_end(
            graph: *mut c_void,
            error: *mut c_char,
            len: usize,
        ) -> c_int;
        pub fn retain_graph_replay(graph: *mut c_void, error: *mut c_char, len: usize) -> c_int;
    }
}

/// Without the shim no [`Graph`] is ever made ([`availability`] refuses first); these keep the
/// calls type-checked.
#[cfg(not(retain_graph_shim))]
#[allow(clippy::missing_safety_doc)]
mod ffi {
    use std::ffi::{c_char, c_int, c_void};
    fn off() -> c_int {
        1
    }
    pub unsafe fn retain_graph_new(
        _: c_int,
        _: *mut *mut c_void,
        _: *mut c_char,
        _: usize,
    ) -> c_int {
        off()
    }
    pub unsafe fn retain_graph_free(_: *mut c_void) {}
    pub unsafe fn retain_graph_enter_side_stream(
        _: *mut c_void,
        _: *mut c_char,
        _: usize,
    ) -> c_int {
        off()
    }
    pub unsafe fn retain_graph_leave_side_stream(
        _: *mut c_void,
        _: *mut c_char,
        _: usize,
    ) -> c_int {
        off()
    }
    pub unsafe fn retain_graph_capture_begin(_: *mut c_void, _: *mut c_char, _: usize) -> c_int {
        off()
    }
    pub unsafe fn retain_graph_capture_end(_: *mut c_void, _: *mut c_char, _: usize) -> c_int {
        off()
    }
    pub unsafe fn retain_graph_replay(_: *mut c_void, _: *mut c_char, _: usize) -> c_int {
        off()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    /// Here (no GPU) graphs are off, with the reason; on a CUDA machine a captured region
    /// replays with new inputs and the same storage.
    #[test]
    fn off_without_cuda_and_replays_with_new_inputs_on_cuda() {
        assert!(availability(Device::Cpu).is_err());
        if !tch::Cuda::is_available() {
            let why = availability(Device::Cuda(0)).unwrap_err();
            assert!(!why.0.is_empty());
            assert!(Graph::new(Device::Cuda(0)).is_err());
            if std::env::var_os("RETAIN_REQUIRE_CUDA").is_some() {
                panic!("RETAIN_REQUIRE_CUDA is set but no CUDA device is visible: {why}");
            }
            eprintln!("CUDA half skipped: no CUDA device ({why})");
            return;
        }
        let device = Device::Cuda(0);
        let mut input = Tensor::zeros([4], (Kind::Float, device));
        let mut output = Tensor::zeros([4], (Kind::Float, device));
        let mut graph = Graph::new(device).unwrap();
        graph
            .on_side_stream(|| {
                output.copy_(&(&input * 2.0 + 1.0));
            })
            .unwrap();
        graph
            .capture(|| {
                output.copy_(&(&input * 2.0 + 1.0));
            })
            .unwrap();
        for k in 0..3 {
            input.copy_(&Tensor::from_slice(&[k as f32, 1.0, 2.0, 3.0]).to_device(device));
            graph.replay().unwrap();
            let got: Vec<f32> = Vec::try_from(output.to_device(Device::Cpu)).unwrap();
            assert_eq!(got, [2.0 * k as f32 + 1.0, 3.0, 5.0, 7.0]);
        }
        // A region that reads the host cannot be captured: an error, not a crash.
        let mut bad = Graph::new(device).unwrap();
        let err = bad.capture(|| {
            let _ = input.sum(Kind::Float).double_value(&[]);
        });
        assert!(err.is_err());
    }
}

// CUDA-graph capture and replay for retain, over at::cuda::CUDAGraph.
//
// Every entry point catches C++ exceptions and reports them as a message (a C++ exception
// must never unwind into Rust). The recipe is PyTorch's own (torch.cuda.graph): synchronise,
// make a side stream from the pool current, capture on it (never on the legacy default
// stream), restore the previous stream; replay on the current stream.

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <optional>

#include "guard.h"

namespace {

using retain_shim::guarded;

struct Graph {
  explicit Graph(c10::DeviceIndex device)
      : device(device), side(c10::cuda::getStreamFromPool(false, device)) {}
  c10::DeviceIndex device;
  at::cuda::CUDAGraph graph;
  c10::cuda::CUDAStream side;
  std::optional<c10::cuda::CUDAStream> previous;
};

}  // namespace

extern "C" {

int retain_graph_new(int device, void** out, char* error, size_t len) {
  return guarded(error, len, [&] {
    *out = new Graph(static_cast<c10::DeviceIndex>(device));
  });
}

void retain_graph_free(void* graph) {
  try {
    delete static_cast<Graph*>(graph);
  } catch (...) {
  }
}

// Makes the graph's side stream current (after a device synchronisation, so it sees every
// earlier write): eager warm-up steps and the capture itself run there.
int retain_graph_enter_side_stream(void* graph, char* error, size_t len) {
  return guarded(error, len, [&] {
    auto* g = static_cast<Graph*>(graph);
    c10::cuda::device_synchronize();
    g->previous = c10::cuda::getCurrentCUDAStream(g->device);
    c10::cuda::setCurrentCUDAStream(g->side);
  });
}

// Restores the stream current before `enter_side_stream`, after a synchronisation, so later
// work on it sees everything done on the side stream.
int retain_graph_leave_side_stream(void* graph, char* error, size_t len) {
  return guarded(error, len, [&] {
    auto* g = static_cast<Graph*>(graph);
    c10::cuda::device_synchronize();
    if (g->previous) {
      c10::cuda::setCurrentCUDAStream(*g->previous);
      g->previous.reset();
    }
  });
}

int retain_graph_capture_begin(void* graph, char* error, size_t len) {
  return guarded(error, len, [&] { static_cast<Graph*>(graph)->graph.capture_begin(); });
}

int retain_graph_capture_end(void* graph, char* error, size_t len) {
  return guarded(error, len, [&] { static_cast<Graph*>(graph)->graph.capture_end(); });
}

int retain_graph_replay(void* graph, char* error, size_t len) {
  return guarded(error, len, [&] { static_cast<Graph*>(graph)->graph.replay(); });
}

}  // extern "C"

// Between the allocator (memory.cc), the graphs (graph.cc) and the backend (backend.cc): the memory pools that
// keep a CUDA graph's blocks apart. CUDA files only; the rest of the native code sees cuda_hooks.h.
#pragma once

namespace vgg {

// From now on allocations come from a new pool (its own free blocks first, then the shared cache, then cudaMalloc)
// and every free goes to it, whoever allocated the block: whatever the capture touched stays the graph's.
// Returns the pool's id.
int cuda_pool_open();
// The capture is over: allocations and frees go to the shared cache again, except that a block of this pool, when
// freed, returns to the pool (the graph may still write it) until the pool is released.
void cuda_pool_close();
// A live block (a workspace the backend keeps using) joins the open pool: when freed later it stays the graph's.
void cuda_pool_adopt(void* p);
// The graph is gone: its free blocks go back to the shared cache, its live ones become ordinary blocks.
void cuda_pool_release(int id) noexcept;

// Called by cuda_graph_begin once the pool is open: the backend's long-lived buffers (conv workspace, SGD table)
// join it, so growing them later cannot hand the old block to someone else while a graph still uses it.
void cuda_backend_on_capture_begin();
// Called by cuda_graph_end once the graph is made: the SGD table the graph reads is the graph's now (freed into its
// pool); the backend uploads a new one at its next eager step instead of rewriting the graph's in place.
void cuda_backend_on_capture_end() noexcept;

}  // namespace vgg

// Gives the process's free heap pages back to the kernel (glibc malloc_trim(3)), for the one
// periodic housekeeping thread off the request path (the response cache's writer).
#pragma once

#include <cstddef>

namespace keyway::storage {

// If the heap holds more than `threshold_bytes` free (mallinfo2(3)), trims every malloc arena.
// glibc keeps what a burst freed (many concurrent requests, large bodies) in its arenas, in
// pieces between live allocations, so the pages stay resident: RSS stays at the burst's peak.
// The trim locks each arena while it walks it, so it costs in proportion to the free heap.
// Returns whether it trimmed; false with threshold 0 or a C library without mallinfo2.
bool releaseFreeHeap(size_t threshold_bytes);

}  // namespace keyway::storage

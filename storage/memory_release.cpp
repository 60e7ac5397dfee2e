// releaseFreeHeap(): malloc_trim when glibc holds more free heap than a threshold.
#include "storage/memory_release.hpp"

#include <malloc.h>

namespace keyway::storage {

bool releaseFreeHeap(size_t threshold_bytes) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33))
  if (threshold_bytes == 0) return false;
  if (::mallinfo2().fordblks <= threshold_bytes) return false;
  ::malloc_trim(0);
  return true;
#else
  (void)threshold_bytes;
  return false;
#endif
}

}  // namespace keyway::storage

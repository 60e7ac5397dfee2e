// Secret wiping and constant-time comparison without pulling a crypto library into core.
#include "core/secret.hpp"

#include <string.h>  // explicit_bzero (glibc >= 2.25)

namespace keyway::core {

void secureWipe(void* data, size_t size) { explicit_bzero(data, size); }

bool constantTimeEquals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  volatile unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = diff | static_cast<unsigned char>(a[i] ^ b[i]);
  }
  return diff == 0;
}

}  // namespace keyway::core

// Internal to storage/: the result and error names of core that every storage file speaks in,
// declared once for the whole namespace.
#pragma once

#include "core/result.hpp"

namespace keyway::storage {

using core::Error;
using core::ErrorCode;
using core::Result;
using core::Status;

}  // namespace keyway::storage

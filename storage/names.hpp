// What counts as a valid name of a team, client, secret, BOSA user or upstream: the one rule
// the credential rules, the schema stores, keywayctl and the record decoders all apply.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace keyway::storage {

inline constexpr size_t kMaxNameLength = 128;

// 1..128 of [A-Za-z0-9._@+-], not starting with '-'.
bool isValidName(std::string_view name);
// kBadRequest "invalid <kind> name '...': ..." (the name is shown escaped and truncated).
core::Status validateName(std::string_view kind, std::string_view name);

// `s` fit for an error message: at most 64 bytes, anything not printable ASCII as \xNN.
std::string printable(std::string_view s);

}  // namespace keyway::storage

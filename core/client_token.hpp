// The shape of keyway client tokens (`kw_...`) and the rule that keeps them on the host: where a
// token can hide in a header value or a request target. Pure functions, thread-safe.
#pragma once

#include <cstddef>
#include <string_view>

namespace keyway::core {

// Client tokens: "kw_" + base64url (no padding) of 32 random bytes = 46 characters.
inline constexpr std::string_view kClientTokenPrefix = "kw_";
inline constexpr size_t kClientTokenBodyChars = 43;
inline constexpr size_t kClientTokenLength = 46;
static_assert(kClientTokenPrefix.size() + kClientTokenBodyChars == kClientTokenLength);

// True for strings of exactly the generated shape (checked before any store lookup).
bool isWellFormedClientToken(std::string_view token);

// The token rule (docs/isolation.md): true when `text` carries something of a client token's
// shape anywhere, so that it must never be sent upstream. Looks at the text as it is, at its
// percent-decoded form, and, for an HTTP Basic credential ("Basic <base64>"), at the decoded
// user:password. "Something of a client token's shape" is "kw_" followed by at least
// kClientTokenBodyChars base64url characters, wherever it starts: a revoked, mistyped or foreign
// token is withheld just the same. Linear in |text|; never allocates for text without "kw".
bool carriesClientToken(std::string_view text);

}  // namespace keyway::core

// Internal to daemon/ctl/: reading a secret from standard input, never from arguments.
#pragma once

#include <iosfwd>
#include <optional>
#include <string>

#include "core/secret.hpp"

namespace keyway::daemon::ctl {

struct SecretInput {
  std::optional<core::SecretString> value;
  std::string error;  // set when value is empty
};

// Reads the whole of `in` (at most 64 KiB), one trailing newline stripped; when `in` is std::cin on
// a terminal, one line with echo off after a prompt on `err`. `what` names the secret in messages.
// A value usable as an HTTP header value, or the reason it is not.
SecretInput readSecret(std::istream& in, std::ostream& err, const std::string& what);

}  // namespace keyway::daemon::ctl

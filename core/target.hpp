// Request-target rules of docs/http.md: origin-form only, no dot segments, mount/rest split.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "core/result.hpp"

namespace keyway::core {

// Validates the raw request-target of a request arriving at keyway. It must be origin-form
// ("/" ...), so absolute-form, authority-form and "*" are refused; only visible ASCII; no '#';
// percent-escapes well-formed (%XX); no "." or ".." path segment, raw or percent-encoded in any
// case (%2e, %2E, .%2e, %2e%2e ...). For the dot-segment check only, '\', %2F and %5C also count
// as segment separators and a segment is cut at ';' (so "..%2F", "..\" and "..;x" are refused:
// upstream stacks that decode or normalise them would otherwise see a "..").
// Errors: kBadRequest, with a message saying what is wrong and what to do (never quoting the
// target). Pure function, thread-safe.
Status validateTarget(std::string_view target);

// The first path segment of a target (the upstream's mount name) and what follows it.
// `mount` is a view into the target (the caller keeps the target alive); `rest` is a copy
// because "/bosa?x=1" needs a '/' that is not in the target.
struct MountSplit {
  std::string_view mount;
  std::string rest;  // always starts with '/'
};
// "/bundleup-api/v1/x?y=1" -> {"bundleup-api", "/v1/x?y=1"}; "/bosa" -> {"bosa", "/"};
// "/bosa?x=1" -> {"bosa", "/?x=1"}; "/", "//x", "/?x" or a target not starting with '/' ->
// nullopt. Does not validate: call validateTarget first.
std::optional<MountSplit> splitMount(std::string_view target);

// Checks the rest that will be appended to an upstream's base_url: must start with '/', must not
// start with "//" or "/\" (it could change the upstream host), visible ASCII only, no '#',
// well-formed escapes, and no dot segments (same rule as validateTarget). Encoded slashes (%2F)
// are allowed and kept. Errors: kBadRequest. Pure function, thread-safe.
Status validateRest(std::string_view rest);
// validateRest for a rest cut from a target that validateTarget accepted: splitMount's rest, or
// a compat listener's whole target. Bytes, escapes and dot segments were checked with the target
// (the cut is at a raw '/' or '?', so the rest's segments are the target's), so only the checks
// the cut adds run; same result as validateRest for such a rest, half the work per request.
Status validateRestOfValidTarget(std::string_view rest);

// The part of a target before the first '?' (the whole target if none).
std::string_view targetPath(std::string_view target);
// The part after the first '?', without it ("" if none).
std::string_view targetQuery(std::string_view target);

}  // namespace keyway::core

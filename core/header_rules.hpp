// Which header fields cross keyway in each direction (hop-by-hop and keyway-private ones do not).
#pragma once

#include <string_view>

#include "core/http_types.hpp"

namespace keyway::core {

// Connection, Keep-Alive, Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade,
// Proxy-Authenticate, Proxy-Authorization (case-insensitive). RFC 9110 §7.6.1.
bool isHopByHop(std::string_view name);

// Headers to send upstream, in their original order and spelling: drops hop-by-hop ones and any
// named in the request's Connection header(s), Host (the HTTP client sets it from the URL),
// Content-Length (recomputed from the body), Expect, every X-Keyway-* header (client token,
// user handle, ...) and, by the token rule (core/client_token.hpp), every field whose value
// carries a keyway client token, whatever its name, scheme or position. Credential injection
// happens after this filter, so a Connection header can never remove an injected credential.
// `replaced` (if not empty) is one more field name to drop: the one the caller is about to set
// itself (the upstream's credential header), which is then never copied only to be removed
// again. `withheld` (optional) receives how many fields the token rule dropped (X-Keyway-* and
// `replaced` fields not counted). Pure function, thread-safe.
Headers upstreamRequestHeaders(const Headers& client_headers, std::string_view replaced = {},
                               size_t* withheld = nullptr);

// Headers to send to the client: drops hop-by-hop ones (and those named in the upstream's
// Connection header(s)), Content-Length and Transfer-Encoding (the server frames the body
// itself). Everything else (Content-Type, Retry-After, Mcp-Session-Id, ...) passes unchanged.
Headers clientResponseHeaders(const Headers& upstream_headers);
// The same, filtering the given fields in place (no copies of the kept ones).
Headers clientResponseHeaders(Headers&& upstream_headers);

}  // namespace keyway::core

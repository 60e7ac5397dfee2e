// The validation rule for BOSA (docs/isolation.md): which route of BOSA's server a request path
// reaches, decided once, so that every request the upstream would run as an action is validated
// first and a minted user token only goes with routes keyway recognises. Pure, thread-safe.
#pragma once

#include <string>
#include <string_view>

namespace keyway::core {

enum class BosaRouteKind {
  kDiscovery,    // /connectors, /connectors/, /connectors/names: served from the schema store
  kAction,       // /connectors/{app}/{action}
  kIntegration,  // /connectors/{app}/integrations[/{id}], .../integration-exists, .../success-authorize-callback
  kUser,         // /users, /users/me, /auth/tokens, /clients/... (users and their tokens)
  kOther,        // anything else: forwarded with the client key only, never with a user token
};

struct BosaRoute {
  BosaRouteKind kind = BosaRouteKind::kOther;
  // The raw path is the route's own spelling. BOSA's server (and any proxy before it) decodes
  // percent-escapes, merges repeated slashes and redirects a trailing slash away before routing,
  // so "/connectors/github/create_issue/", "/connectors//github/create_issue" and
  // "/connectors/github/create%5Fissue" all reach the action create_issue. Such a spelling is
  // not canonical; keyway refuses it where it matters (actions, user tokens) rather than guess
  // how far an upstream normalises.
  bool canonical = true;
  std::string path;       // the normalised path the route was decided on
  std::string connector;  // kAction, kIntegration: {app}, decoded
  std::string action;     // kAction: {action}, decoded
};

// "discovery", "action", "integration", "user" or "other", for logs.
const char* bosaRouteKindName(BosaRouteKind kind);

// Classifies the path part of a BOSA request target (no query). Normalisation: percent-escapes
// decoded once (%2F included), runs of '/' merged, trailing '/' removed. "/connectors/" is a
// canonical spelling of discovery (the SDK sends it).
BosaRoute classifyBosaPath(std::string_view raw_path);

// Whether keyway may send a minted BOSA user token with `method` on `route`: canonical action
// calls (POST), integration and user routes. Everything else would carry a user's credential to
// a route keyway did not recognise.
bool bosaRouteTakesUserToken(const BosaRoute& route, std::string_view method);

}  // namespace keyway::core

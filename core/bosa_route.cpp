// BOSA route classification: the one place that decides which BOSA route a path reaches.
#include "core/bosa_route.hpp"

#include <vector>

#include "core/text.hpp"

namespace keyway::core {

namespace {

std::string normalise(std::string_view raw) {
  const std::string decoded = percentDecodeOnce(raw);
  std::string out;
  out.reserve(decoded.size() + 1);
  for (char c : decoded) {
    if (c == '/' && !out.empty() && out.back() == '/') continue;
    out.push_back(c);
  }
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  if (out.empty() || out.front() != '/') out.insert(out.begin(), '/');
  return out;
}

std::vector<std::string_view> segments(std::string_view path) {
  std::vector<std::string_view> out;
  size_t pos = 1;  // after the leading '/'
  while (pos < path.size()) {
    size_t slash = path.find('/', pos);
    if (slash == std::string_view::npos) slash = path.size();
    out.push_back(path.substr(pos, slash - pos));
    pos = slash + 1;
  }
  return out;
}

bool startsWith(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// The discovery document's filter (docs/bosa.md: an entry whose name starts with one of these is
// not an action).
bool isReservedActionName(std::string_view name) {
  return startsWith(name, "integrations") || startsWith(name, "integration-exists") ||
         startsWith(name, "success-authorize-callback");
}

}  // namespace

const char* bosaRouteKindName(BosaRouteKind kind) {
  switch (kind) {
    case BosaRouteKind::kDiscovery: return "discovery";
    case BosaRouteKind::kAction: return "action";
    case BosaRouteKind::kIntegration: return "integration";
    case BosaRouteKind::kUser: return "user";
    case BosaRouteKind::kOther: break;
  }
  return "other";
}

BosaRoute classifyBosaPath(std::string_view raw_path) {
  BosaRoute route;
  route.path = normalise(raw_path);
  route.canonical = route.path == raw_path;
  const auto segs = segments(route.path);
  if (segs.empty()) return route;
  if (segs[0] == "connectors") {
    if (segs.size() == 1 || (segs.size() == 2 && segs[1] == "names")) {
      route.kind = BosaRouteKind::kDiscovery;
      if (raw_path == "/connectors/") route.canonical = true;
      return route;
    }
    if (segs.size() == 3) {
      route.connector = std::string(segs[1]);
      if (isReservedActionName(segs[2])) {
        route.kind = BosaRouteKind::kIntegration;
      } else {
        route.kind = BosaRouteKind::kAction;
        route.action = std::string(segs[2]);
      }
      return route;
    }
    if (segs.size() == 4 && segs[2] == "integrations") {
      route.kind = BosaRouteKind::kIntegration;
      route.connector = std::string(segs[1]);
    }
    return route;
  }
  if ((segs[0] == "users" && segs.size() <= 2) || (segs[0] == "auth" && segs.size() == 2 && segs[1] == "tokens") ||
      (segs[0] == "clients" && segs.size() == 2)) {
    route.kind = BosaRouteKind::kUser;
  }
  return route;
}

bool bosaRouteTakesUserToken(const BosaRoute& route, std::string_view method) {
  if (!route.canonical) return false;
  switch (route.kind) {
    case BosaRouteKind::kAction: return method == "POST";
    case BosaRouteKind::kIntegration:
    case BosaRouteKind::kUser: return true;
    case BosaRouteKind::kDiscovery:
    case BosaRouteKind::kOther: break;
  }
  return false;
}

}  // namespace keyway::core

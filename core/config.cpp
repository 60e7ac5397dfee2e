// The configuration model's small behaviours: address formatting, upstream lookup, protocol
// defaults.
#include "core/config.hpp"

#include <string_view>

#include "core/text.hpp"

namespace keyway::core {

std::string ListenAddress::toString() const {
  // An IPv6 literal needs brackets, or its colons would run into the port's.
  const bool bracket = host.find(':') != std::string::npos;
  std::string out;
  out.reserve(host.size() + 8);
  if (bracket) out += '[';
  out += host;
  if (bracket) out += ']';
  out += ':';
  out += std::to_string(port);
  return out;
}

const UpstreamConfig* Config::findUpstream(std::string_view name) const {
  for (const auto& upstream : upstreams) {
    if (upstream.name == name) return &upstream;
  }
  return nullptr;
}

Protocol defaultProtocolFor(std::string_view upstream_name) {
  auto starts_with = [&](std::string_view prefix) {
    return upstream_name.substr(0, prefix.size()) == prefix;
  };
  if (starts_with("bundleup")) return Protocol::kBundleUp;
  if (starts_with("bundleiq")) return Protocol::kBundleIq;
  if (starts_with("bosa")) return Protocol::kBosa;
  return Protocol::kGeneric;
}

CredentialInjection defaultCredentialFor(Protocol protocol) {
  // docs/auth.md: what keyway injects for each upstream family.
  switch (protocol) {
    case Protocol::kBundleUp:
      return {"Authorization", "Bearer ", "bundleup.api_key"};
    case Protocol::kBosa:
      return {"X-API-Key", "", "bosa.api_key"};
    case Protocol::kBundleIq:
      return {"X-Api-Key", "", "bundleiq.api_key"};
    case Protocol::kGeneric:
      break;
  }
  return {};
}

const char* protocolName(Protocol protocol) {
  switch (protocol) {
    case Protocol::kBundleUp:
      return "bundleup";
    case Protocol::kBosa:
      return "bosa";
    case Protocol::kBundleIq:
      return "bundleiq";
    case Protocol::kGeneric:
      break;
  }
  return "generic";
}

bool isLoopbackAddress(std::string_view peer) {
  if (peer == "::1" || peer == "[::1]") return true;
  for (std::string_view prefix : {"::ffff:", "[::ffff:"}) {
    if (startsWithNoCase(peer, prefix)) {
      peer.remove_prefix(prefix.size());
      if (!peer.empty() && peer.back() == ']') peer.remove_suffix(1);
      break;
    }
  }
  // Dotted IPv4 whose first octet is 127: four decimal octets, nothing else.
  if (peer.substr(0, 4) != "127.") return false;
  int octets = 0;
  size_t digits = 0;
  for (char c : peer) {
    if (c == '.') {
      if (digits == 0) return false;
      ++octets;
      digits = 0;
    } else if (c >= '0' && c <= '9' && digits < 3) {
      ++digits;
    } else {
      return false;
    }
  }
  return octets == 3 && digits != 0;
}

}  // namespace keyway::core

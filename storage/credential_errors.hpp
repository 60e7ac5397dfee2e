// Errors shared by both CredentialStore implementations, so they fail with identical codes and
// messages ("what failed and what to do"). Names in messages are validated names, never secrets.
#pragma once

#include <string>
#include <string_view>

#include "core/result.hpp"

namespace keyway::storage::errors {

inline core::Error badRequest(std::string msg) {
  return core::Error::make(core::ErrorCode::kBadRequest, std::move(msg));
}

inline core::Error unknownTeam(std::string_view team) {
  return badRequest("unknown team '" + std::string(team) + "'; create it with `keywayctl team add " +
                    std::string(team) + "` or see `keywayctl team list`");
}
inline core::Error duplicateTeam(std::string_view team) {
  return badRequest("team '" + std::string(team) + "' already exists");
}
inline core::Error teamInUse(std::string_view team, size_t clients, std::string_view first) {
  return badRequest("team '" + std::string(team) + "' still has " + std::to_string(clients) +
                    " active client(s) (e.g. '" + std::string(first) +
                    "'); revoke them first with `keywayctl client revoke NAME`");
}
inline core::Error noUpstreams() {
  return badRequest("a team needs at least one upstream (omit --upstreams to allow all)");
}
inline core::Error unknownClient(std::string_view client) {
  return badRequest("unknown client '" + std::string(client) + "'; see `keywayctl client list`");
}
inline core::Error duplicateClient(std::string_view client) {
  return badRequest("client '" + std::string(client) +
                    "' already exists; revoke it first or pick another name");
}
inline core::Error emptySecret() {
  return badRequest("the secret value is empty; nothing was stored");
}
inline core::Error unknownSecret(std::string_view name, std::string_view team) {
  return badRequest("no secret '" + std::string(name) + "' " +
                    (team.empty() ? std::string("(shared)") : "for team '" + std::string(team) + "'") +
                    "; see `keywayctl secret list`");
}
inline core::Error unknownUser(std::string_view id) {
  return badRequest("unknown BOSA user '" + std::string(id) + "'; see `keywayctl bosa-user list`");
}
inline core::Error duplicateUser(std::string_view id) {
  return badRequest("BOSA user '" + std::string(id) + "' already exists");
}
inline core::Error userNotGranted(std::string_view id, std::string_view team) {
  return badRequest("BOSA user '" + std::string(id) + "' is not granted to team '" +
                    std::string(team) + "'");
}

}  // namespace keyway::storage::errors

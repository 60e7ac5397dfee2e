// Binary record encoding: [tag][version][fields...], little-endian fixed-width integers,
// u32-length-prefixed strings; decoders bounds-check every read and require exact consumption.
#include "storage/record_codec.hpp"

#include <set>

#include "storage/byte_codec.hpp"
#include "storage/core_names.hpp"

namespace keyway::storage {

namespace {

constexpr uint8_t kVersion = 1;
constexpr uint8_t kClientVersionRotated = 2;
constexpr uint8_t kTagTeam = 'T';
constexpr uint8_t kTagClient = 'C';
constexpr uint8_t kTagClientTokenRef = 'H';
constexpr uint8_t kTagSecret = 'S';
constexpr uint8_t kTagBosaUser = 'U';
constexpr uint8_t kTagUserToken = 'K';
constexpr uint8_t kTagSchemaVersion = 'M';
constexpr uint8_t kTagKeyCheck = 'X';
constexpr uint8_t kTagKeyId = 'I';
constexpr uint8_t kTagHashKeys = 'Y';
constexpr uint32_t kMaxListEntries = 1024;
constexpr size_t kTokenHashSize = 32;

// Every record starts with its tag and the encoding version.
class Writer : public ByteWriter {
 public:
  explicit Writer(uint8_t tag, uint8_t version = kVersion) {
    u8(tag);
    u8(version);
  }
};

class Reader : public ByteReader {
 public:
  using ByteReader::ByteReader;
  using ByteReader::list;
  bool list(std::vector<std::string>& items) { return ByteReader::list(items, kMaxListEntries); }
  bool header(uint8_t tag) {
    uint8_t v = 0;
    return header(tag, v) && v == kVersion;
  }
  // The tag checked, the version returned for the caller to check.
  bool header(uint8_t tag, uint8_t& version) {
    uint8_t t = 0;
    return u8(t) && t == tag && u8(version);
  }
};

Error malformed(std::string_view what) {
  return Error::make(ErrorCode::kInternal,
                     "malformed " + std::string(what) +
                         " record in the credential store (damaged or written by an "
                         "incompatible version)");
}

bool validNameList(const std::vector<std::string>& names) {
  std::set<std::string_view> seen;
  for (const auto& n : names) {
    if (!isValidName(n) || !seen.insert(n).second) return false;
  }
  return true;
}

}  // namespace

std::string associatedData(std::string_view table_name, std::string_view key) {
  std::string ad(table_name);
  ad.push_back('\0');
  ad.append(key);
  return ad;
}

// --- teams ---

std::string encodeTeam(const core::TeamRecord& team) {
  Writer w(kTagTeam);
  w.i64(team.created_unix);
  w.u8(team.all_upstreams ? 1 : 0);
  w.list(team.all_upstreams ? std::vector<std::string>{} : team.upstreams);
  return w.take();
}

Result<core::TeamRecord> decodeTeam(std::string_view key, std::string_view value) {
  core::TeamRecord team;
  Reader r(value);
  if (!isValidName(key) || !r.header(kTagTeam) || !r.i64(team.created_unix) ||
      !r.boolean(team.all_upstreams) || !r.list(team.upstreams) || !r.atEnd() ||
      !validNameList(team.upstreams) || (team.all_upstreams && !team.upstreams.empty())) {
    return malformed("team");
  }
  team.name = std::string(key);
  return team;
}

// --- clients ---

std::string encodeClient(const StoredClient& client) {
  const bool rotated = client.client.rotated_unix != 0;
  Writer w(kTagClient, rotated ? kClientVersionRotated : kVersion);
  w.str(client.client.team);
  w.u8(client.client.revoked ? 1 : 0);
  w.i64(client.client.created_unix);
  w.str(client.token_hash);
  if (rotated) {
    w.i64(client.client.rotated_unix);
    w.str(client.previous_token_hash);
    w.i64(client.client.previous_token_until_unix);
  }
  return w.take();
}

Result<StoredClient> decodeClient(std::string_view key, std::string_view value) {
  StoredClient c;
  Reader r(value);
  uint8_t version = 0;
  if (!isValidName(key) || !r.header(kTagClient, version) ||
      (version != kVersion && version != kClientVersionRotated) || !r.str(c.client.team) ||
      !r.boolean(c.client.revoked) || !r.i64(c.client.created_unix) || !r.str(c.token_hash) ||
      !isValidName(c.client.team) || c.token_hash.size() != kTokenHashSize) {
    return malformed("client");
  }
  if (version == kClientVersionRotated) {
    // A rotation time of 0 would be written as version 1; a previous token comes with the end
    // of its grace, and no end of grace without one.
    if (!r.i64(c.client.rotated_unix) || !r.str(c.previous_token_hash) ||
        !r.i64(c.client.previous_token_until_unix) || c.client.rotated_unix == 0 ||
        (c.previous_token_hash.empty() != (c.client.previous_token_until_unix == 0)) ||
        (!c.previous_token_hash.empty() && c.previous_token_hash.size() != kTokenHashSize)) {
      return malformed("client");
    }
  }
  if (!r.atEnd()) return malformed("client");
  c.client.name = std::string(key);
  return c;
}

std::string encodeClientTokenRef(std::string_view client_name) {
  Writer w(kTagClientTokenRef);
  w.str(client_name);
  return w.take();
}

Result<std::string> decodeClientTokenRef(std::string_view key, std::string_view value) {
  std::string name;
  Reader r(value);
  if (key.size() != kTokenHashSize || !r.header(kTagClientTokenRef) || !r.str(name) ||
      !r.atEnd() || !isValidName(name)) {
    return malformed("client token");
  }
  return name;
}

// --- secrets ---

std::string secretKey(std::string_view team, std::string_view name) {
  std::string key(team);
  key.push_back('\0');
  key.append(name);
  return key;
}

Result<std::pair<std::string, std::string>> decodeSecretKey(std::string_view key) {
  const size_t nul = key.find('\0');
  if (nul == std::string_view::npos) return malformed("secret key");
  std::string team(key.substr(0, nul));
  std::string name(key.substr(nul + 1));
  if ((!team.empty() && !isValidName(team)) || !isValidName(name)) {
    return malformed("secret key");
  }
  return std::make_pair(std::move(team), std::move(name));
}

std::string encodeSecret(int64_t updated_unix, std::string_view sealed) {
  Writer w(kTagSecret);
  w.i64(updated_unix);
  w.str(sealed);
  return w.take();
}

Result<StoredSecret> decodeSecret(std::string_view key, std::string_view value) {
  auto k = decodeSecretKey(key);
  if (!k) return k.takeError();
  StoredSecret s;
  Reader r(value);
  if (!r.header(kTagSecret) || !r.i64(s.updated_unix) || !r.str(s.sealed) || !r.atEnd() ||
      s.sealed.empty()) {
    return malformed("secret");
  }
  s.team = std::move(k->first);
  s.name = std::move(k->second);
  return s;
}

// --- BOSA users ---

std::string encodeBosaUser(const StoredBosaUser& user) {
  Writer w(kTagBosaUser);
  w.i64(user.user.created_unix);
  w.list(user.user.teams);
  w.str(user.sealed_secret);
  return w.take();
}

Result<StoredBosaUser> decodeBosaUser(std::string_view key, std::string_view value) {
  StoredBosaUser u;
  Reader r(value);
  if (!isValidName(key) || !r.header(kTagBosaUser) || !r.i64(u.user.created_unix) ||
      !r.list(u.user.teams) || !r.str(u.sealed_secret) || !r.atEnd() ||
      !validNameList(u.user.teams) || u.sealed_secret.empty()) {
    return malformed("BOSA user");
  }
  u.user.identifier = std::string(key);
  return u;
}

std::string encodeUserToken(const StoredUserToken& token) {
  Writer w(kTagUserToken);
  w.i64(token.expires_unix);
  w.str(token.sealed_token);
  return w.take();
}

Result<StoredUserToken> decodeUserToken(std::string_view key, std::string_view value) {
  StoredUserToken t;
  Reader r(value);
  if (!isValidName(key) || !r.header(kTagUserToken) || !r.i64(t.expires_unix) ||
      !r.str(t.sealed_token) || !r.atEnd() || t.sealed_token.empty()) {
    return malformed("user token");
  }
  return t;
}

// --- meta ---

std::string encodeSchemaVersion(uint32_t version) {
  Writer w(kTagSchemaVersion);
  w.u32(version);
  return w.take();
}

Result<uint32_t> decodeSchemaVersion(std::string_view value) {
  uint32_t v = 0;
  Reader r(value);
  if (!r.header(kTagSchemaVersion) || !r.u32(v) || !r.atEnd()) return malformed("schema version");
  return v;
}

namespace {

// A meta record holding one non-empty string: [tag][version][str].
std::string encodeMetaString(uint8_t tag, std::string_view value) {
  Writer w(tag);
  w.str(value);
  return w.take();
}

Result<std::string> decodeMetaString(uint8_t tag, std::string_view value, std::string_view what) {
  std::string out;
  Reader r(value);
  if (!r.header(tag) || !r.str(out) || !r.atEnd() || out.empty()) return malformed(what);
  return out;
}

}  // namespace

std::string encodeKeyCheck(std::string_view sealed) { return encodeMetaString(kTagKeyCheck, sealed); }

Result<std::string> decodeKeyCheck(std::string_view value) {
  return decodeMetaString(kTagKeyCheck, value, "key check");
}

std::string encodeKeyId(std::string_view key_id) { return encodeMetaString(kTagKeyId, key_id); }

Result<std::string> decodeKeyId(std::string_view value) {
  auto id = decodeMetaString(kTagKeyId, value, "key id");
  if (id && id->size() != kKeyIdSize) return malformed("key id");
  return id;
}

std::string encodeHashKeys(std::string_view sealed) {
  return encodeMetaString(kTagHashKeys, sealed);
}

Result<std::string> decodeHashKeys(std::string_view value) {
  return decodeMetaString(kTagHashKeys, value, "hashing keys");
}

Status decodeRecord(std::string_view table_name, std::string_view key, std::string_view value) {
  auto status = [](auto&& result) -> Status {
    if (!result) return result.takeError();
    return core::okStatus();
  };
  if (table_name == table::kTeams) return status(decodeTeam(key, value));
  if (table_name == table::kClients) return status(decodeClient(key, value));
  if (table_name == table::kClientTokens) return status(decodeClientTokenRef(key, value));
  if (table_name == table::kSecrets) return status(decodeSecret(key, value));
  if (table_name == table::kBosaUsers) return status(decodeBosaUser(key, value));
  if (table_name == table::kUserTokens) return status(decodeUserToken(key, value));
  if (table_name == table::kMeta) {
    if (key == kMetaSchemaVersion) return status(decodeSchemaVersion(value));
    if (key == kMetaKeyCheck) return status(decodeKeyCheck(value));
    if (key == kMetaKeyId) return status(decodeKeyId(value));
    if (key == kMetaHashKeys) return status(decodeHashKeys(value));
    return malformed("meta");
  }
  return Error::make(ErrorCode::kBadRequest, "unknown table '" + printable(table_name) + "'");
}

}  // namespace keyway::storage

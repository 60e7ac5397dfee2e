// Binary record encoding: [tag][version][fields...], little-endian fixed-width integers,
// u32-length-prefixed strings; decoders bounds-check every read and require exact consumption.
#include "storage/record_codec.hpp"

#include <set>

namespace keyway::storage {

using core::Error;
using core::ErrorCode;
using core::Result;
using core::Status;

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
constexpr uint32_t kMaxListEntries = 1024;
constexpr size_t kTokenHashSize = 32;

class Writer {
 public:
  explicit Writer(uint8_t tag, uint8_t version = kVersion) {
    u8(tag);
    u8(version);
  }
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) u8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void i64(int64_t v) {
    const auto u = static_cast<uint64_t>(v);
    for (int i = 0; i < 8; ++i) u8(static_cast<uint8_t>(u >> (8 * i)));
  }
  void str(std::string_view s) {
    u32(static_cast<uint32_t>(s.size()));
    out_.append(s);
  }
  void list(const std::vector<std::string>& items) {
    u32(static_cast<uint32_t>(items.size()));
    for (const auto& s : items) str(s);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

// Every read fails (returns false) once the input is exhausted; nothing is allocated beyond the
// input's own size.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}
  bool u8(uint8_t& v) {
    if (pos_ + 1 > in_.size()) return false;
    v = static_cast<uint8_t>(in_[pos_++]);
    return true;
  }
  bool boolean(bool& v) {
    uint8_t b = 0;
    if (!u8(b) || b > 1) return false;
    v = b == 1;
    return true;
  }
  bool u32(uint32_t& v) {
    if (in_.size() - pos_ < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) {
      v |= static_cast<uint32_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
    }
    pos_ += 4;
    return true;
  }
  bool i64(int64_t& v) {
    if (in_.size() - pos_ < 8) return false;
    uint64_t u = 0;
    for (int i = 0; i < 8; ++i) {
      u |= static_cast<uint64_t>(static_cast<uint8_t>(in_[pos_ + i])) << (8 * i);
    }
    pos_ += 8;
    v = static_cast<int64_t>(u);
    return true;
  }
  bool str(std::string& s) {
    uint32_t len = 0;
    if (!u32(len) || len > in_.size() - pos_) return false;
    s.assign(in_.data() + pos_, len);
    pos_ += len;
    return true;
  }
  bool list(std::vector<std::string>& items) {
    uint32_t n = 0;
    // Each entry takes at least its 4-byte length: a count the input cannot hold is malformed.
    if (!u32(n) || n > kMaxListEntries || n > (in_.size() - pos_) / 4) return false;
    items.clear();
    items.reserve(n);
    for (uint32_t i = 0; i < n; ++i) {
      std::string s;
      if (!str(s)) return false;
      items.push_back(std::move(s));
    }
    return true;
  }
  bool header(uint8_t tag) {
    uint8_t v = 0;
    return header(tag, v) && v == kVersion;
  }
  // The tag checked, the version returned for the caller to check.
  bool header(uint8_t tag, uint8_t& version) {
    uint8_t t = 0;
    return u8(t) && t == tag && u8(version);
  }
  bool atEnd() const { return pos_ == in_.size(); }

 private:
  std::string_view in_;
  size_t pos_ = 0;
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

std::string encodeKeyCheck(std::string_view sealed) {
  Writer w(kTagKeyCheck);
  w.str(sealed);
  return w.take();
}

Result<std::string> decodeKeyCheck(std::string_view value) {
  std::string sealed;
  Reader r(value);
  if (!r.header(kTagKeyCheck) || !r.str(sealed) || !r.atEnd() || sealed.empty()) {
    return malformed("key check");
  }
  return sealed;
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
    return malformed("meta");
  }
  return Error::make(ErrorCode::kBadRequest, "unknown table '" + printable(table_name) + "'");
}

}  // namespace keyway::storage

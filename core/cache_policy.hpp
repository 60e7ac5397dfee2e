// Response cache policy (docs/cache.md): cache rules and their defaults, which requests are cacheable,
// whether a response may be stored and for how long, cache keys, identity tags and invalidation.
// Pure functions over plain data: no I/O, no clock, thread-safe, never throw.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/http_types.hpp"
#include "core/result.hpp"

namespace keyway::core {

// One configurable rule. Rules are tried in order and the FIRST rule that matches a request
// decides: an enabled rule makes it cacheable with its windows, a disabled rule (enabled:
// false) makes it uncacheable. No match: not cacheable (BYPASS).
struct CacheRule {
  std::string upstream = "*";               // upstream name, or a glob ("*" = any)
  std::vector<std::string> methods{"GET"};  // case-insensitive; "*" = any; empty = {"GET"}
  // Glob over the path (the request's rest after the mount, raw as received, without the query):
  // '*' matches any run of characters except '/', '**' any run including '/'; everything else
  // matches itself (case-sensitive). E.g. "/v1/connections/*", "**/mcp", "**".
  std::string path = "**";
  // BOSA: glob over the action name of POST /connectors/{app}/{action} (e.g. "list_*"). When
  // set, the rule matches action requests only; empty = not restricted to actions.
  std::string action;
  std::chrono::seconds ttl{60};                      // fresh for this long
  std::chrono::seconds stale_while_revalidate{30};   // then served stale while one refresh runs
  std::chrono::seconds stale_if_error{3600};         // served stale when the upstream fails
  // true: the upstream's Cache-Control/Pragma are ignored (these APIs rarely send useful ones).
  // false: no-store, private and no-cache prevent storing; s-maxage/max-age replace `ttl`;
  // stale-while-revalidate=N / stale-if-error=N replace the windows.
  bool ignore_upstream_cache_control = true;
  bool enabled = true;
};

// `cache.shared.redis` (docs/cache.md, "Shared cache"): the fleet's second level, in Redis.
struct SharedCacheConfig {
  std::string address;        // host:port, [v6]:port or a unix socket path
  std::string password_file;  // "" = no AUTH; the password is read when connecting
  std::string key_prefix = "keyway:";
  std::chrono::milliseconds timeout{50};  // each Redis command's bound
  size_t max_connections = 4;             // command connections (the subscriber is one more)
};

struct CachePolicyConfig {
  bool enabled = true;                    // false: every request BYPASSes, nothing is opened
  std::string dir;                        // LMDB cache environment; "" = <state_dir>/cache
  size_t max_bytes = size_t{256} << 20;   // bound on stored bytes (keys + responses)
  size_t max_entry_bytes = size_t{8} << 20;     // larger responses are forwarded, not stored
  size_t max_key_body_bytes = size_t{64} << 10; // larger request bodies (BOSA) are not cached
  // Background (stale-while-revalidate) refreshes running at once per upstream. When every key of
  // a list expires together, one refresh per key would otherwise go out in the same second: a
  // burst that spends the SaaS rate limit and opens a connection per refresh. Above the bound the
  // stale entry is served without a refresh; a later stale hit starts it.
  size_t max_background_refreshes = 16;
  std::vector<CacheRule> rules;           // first match wins
  std::optional<SharedCacheConfig> shared;  // absent: each host caches alone
};

// docs/cache.md defaults. Deny rules first: MCP (upstream bundleup-mcp, and any path ending in /mcp or
// under /mcp/ on any upstream, which also covers Unify's /v1/mcp) and the Proxy API
// (bundleup-proxy: arbitrary provider calls, often not idempotent) are never cached. Then:
//  - bundleup-api, bundleup-unify: GET, ttl 60 s, swr 30 s, sie 1 h. Lists (connections,
//    webhooks, channels, tickets) change on human time scales; 60 s bounds how long another
//    app's change stays invisible, 30 s of swr hides the refresh latency (100-500 ms), and an
//    hour of stale-if-error rides out an upstream outage.
//  - bundleiq: GET, ttl 30 s, swr 30 s, sie 1 h: notes are edited interactively, so fresher.
//  - bosa: POST /connectors/*/* with action list_*, search_*, get_*: ttl 60 s, swr 30 s, sie 1 h
//    (same reasoning; these are the reads that cost rate-limit budget).
CachePolicyConfig defaultCachePolicy();

// Checks rules for the config loader: non-empty upstream, methods that are tokens, globs without
// empty segments of stars ("***"), windows that are not negative. The error (kBadRequest) names
// the rule index and field, e.g. "cache.rules[2].path: ...".
Status validateCachePolicy(const CachePolicyConfig& config);

// The glob of CacheRule::path (also used for upstream and action names). Linear in
// |text| * |pattern|; no backtracking blow-up.
bool globMatch(std::string_view pattern, std::string_view text);

// The first rule matching the request, or nullptr when the request is not cacheable (no rule,
// a disabled rule matched first, or the policy is disabled). The pointer is into `config`.
// `bosa_action` is the action name for BOSA action calls, "" otherwise.
const CacheRule* matchRule(const CachePolicyConfig& config, std::string_view upstream,
                           std::string_view method, std::string_view path,
                           std::string_view bosa_action);

// The action name of a BOSA action path "/connectors/{app}/{action}", or "" when `path` has
// another shape. No decoding: the raw segment.
std::string_view bosaActionName(std::string_view path);

// What the client asked of the cache. Cache-Control: no-store -> kNoStore (BYPASS: neither read
// nor written); no-cache or max-age=0, or Pragma: no-cache -> kNoCache (fetch fresh, store, MISS).
// no-store wins over no-cache. Directive names are case-insensitive; every Cache-Control header
// counts; quoted arguments are skipped correctly.
enum class ClientCacheDirective { kNormal, kNoCache, kNoStore };
ClientCacheDirective clientDirective(const Headers& request_headers);

// Whether an upstream response may be stored and its windows. Never stored: non-2xx and 206,
// responses with Set-Cookie, Vary: * or Vary on a request header the key does not cover (only
// Accept-Encoding and the identity headers are covered), event streams (text/event-stream), and
// bodies still content-encoded (Content-Encoding other than identity: the cache stores identity
// bodies, so the gateway must ask for or decode to identity first). Upstream Cache-Control only
// counts when the rule does not ignore it (see CacheRule). Nothing to keep (all windows 0): no.
struct StoreDecision {
  bool store = false;
  std::chrono::seconds ttl{0}, swr{0}, sie{0};
  const char* reason = "";  // why not stored, for debug logs ("" when stored)
};
StoreDecision storeDecision(const CacheRule& rule, int status, const Headers& response_headers);

// Absolute windows of an entry stored at `stored_unix_ms` under `decision`:
// fresh_until = stored + ttl; stale_until = fresh_until + max(swr, sie).
struct FreshnessWindow {
  int64_t fresh_until_unix_ms = 0;
  int64_t stale_until_unix_ms = 0;
};
FreshnessWindow freshnessWindow(int64_t stored_unix_ms, const StoreDecision& decision);

// How an entry may be used at `now`: kFresh (serve, HIT); kStale (within swr: serve STALE and
// refresh once in the background); kStaleIfError (past swr but within sie: fetch, and serve the
// entry STALE only if the upstream fails); kExpired (do not use). `swr`/`sie` are the current
// rule's windows; stale_until bounds both.
enum class CacheFreshness { kFresh, kStale, kStaleIfError, kExpired };
CacheFreshness cacheFreshness(int64_t now_unix_ms, int64_t fresh_until_unix_ms,
                              int64_t stale_until_unix_ms, std::chrono::seconds swr,
                              std::chrono::seconds sie);

// Who a response belongs to: everything that decides whose data the upstream returns
// (docs/isolation.md, "The cache-key rule"). Absent = "". None of these is a secret: credentials
// appear as names and keyed fingerprints, never as values.
struct CacheIdentity {
  std::string credential;        // "<secret name>@<scope>#<fingerprint>" of the credential injected
  std::string bosa_user;         // BOSA user identifier acted as
  std::string connection_id;     // BU-Connection-Id, every field line joined with ", "
  std::string bosa_integration;  // X-Bosa-Integration, likewise
  std::string include_raw;       // BU-Include-Raw, likewise
  // Keyed hash of the credentials the client sent that keyway forwards unchanged (a BOSA user's
  // own JWT, a cookie, another API key): requests with different ones never share an entry.
  std::string passthrough;
};

// Header names that may carry a credential: any name containing "auth", "token", "key",
// "secret", "session", "cookie", "password" or "signature" (case-insensitive). Deliberately wide:
// counting a harmless header in the identity only costs cache hits, missing one would share
// one caller's data with another.
bool isCredentialHeaderName(std::string_view name);

// A keyed hash (CredentialStore::fingerprint): names a value without revealing it.
using KeyedHash = std::function<std::string(std::string_view)>;

// What the identity is computed from: the request exactly as it is forwarded.
struct IdentitySources {
  const Headers& forwarded;                 // every header going upstream, keyway's own included
  std::string_view credential_header;       // the field keyway injected the credential into, or ""
  std::string_view credential_name;         // the injected secret's name ("" if none)
  std::string_view credential_scope;        // "shared" or "team:<name>"
  std::string_view credential_fingerprint;  // ResolvedSecret::fingerprint
  std::string_view bosa_user;               // acted as; Authorization is then keyway's minted token
};

// The cache-key rule's identity: the injected credential (name, scope and which value), the BOSA
// user, the view-selecting headers (BU-Connection-Id, X-Bosa-Integration, BU-Include-Raw) and a
// keyed hash of every passed-through credential field (isCredentialHeaderName, except the
// fields keyway set itself), all read from `in.forwarded`, so a header the client named in
// Connection (and keyway therefore dropped) counts as absent. `keyed_hash` is called only when
// there is a passed-through credential.
CacheIdentity cacheIdentity(const IdentitySources& in, const KeyedHash& keyed_hash);

// Order-insensitive query: split on '&', drop empty parts, then sort the parts STABLY by their
// key (the bytes before the first '='), and rejoin with '&'. Each part keeps its original bytes
// (percent-encoding, '+', "a" vs "a=" all preserved). Parts with the same key keep their
// relative order: for repeated keys order can be meaningful (sort=name&sort=date), and keeping
// it can only cost a miss, never serve a wrong response. Idempotent.
std::string canonicalQuery(std::string_view query);

// The cache key: a versioned, length-prefixed concatenation of upstream, method, path,
// canonicalQuery(query), canonical_body (from canonicalJson, "" when there is no body) and every
// CacheIdentity field, so no two distinct inputs give the same key. `query` is canonicalised
// here (passing an already canonical query is fine). May be long (it holds the body); stores
// hash it.
std::string cacheKey(std::string_view upstream, std::string_view method, std::string_view path,
                     std::string_view query, std::string_view canonical_body,
                     const CacheIdentity& id);

// The identity that OWNS data, for per-identity invalidation: credential, BOSA user, connection
// id and passed-through credentials. X-Bosa-Integration and BU-Include-Raw are deliberately left out: they select a
// view of the same data (an integration of the same user, the raw payload), so a write made
// through one view must invalidate the others too (a DELETE without BU-Include-Raw must still
// drop the BU-Include-Raw: true lists). Length-prefixed like cacheKey.
std::string identityTag(const CacheIdentity& id);

// True for methods whose success invalidates (POST, PUT, PATCH, DELETE; case-insensitive). The
// gateway skips cacheable actions (BOSA list_* are POSTs).
bool invalidatesOnSuccess(std::string_view method);

// The exact paths (any query) a successful write to `path` makes stale for its identity: the
// resource itself and its collection, each with and without a trailing slash.
// "/v1/webhooks/wh_1" -> "/v1/webhooks/wh_1", "/v1/webhooks/wh_1/", "/v1/webhooks",
// "/v1/webhooks/". The root "/" has no collection.
std::vector<std::string> invalidationPaths(std::string_view path);

// BOSA: the path prefix of a connector's entries, "/connectors/{app}/", for any path under it
// (a successful non-cacheable action drops that connector's entries for that identity).
// nullopt when `path` is not under /connectors/{app}/.
std::optional<std::string> bosaConnectorPrefix(std::string_view path);

}  // namespace keyway::core

// Response cache policy: rule matching, client/upstream directives, keys and invalidation paths.
#include "core/cache_policy.hpp"

#include <cstring>

#include <algorithm>
#include <functional>

#include "core/text.hpp"

namespace keyway::core {
namespace {

using std::chrono::seconds;

CacheRule denyRule(std::string upstream, std::string path) {
  CacheRule rule;
  rule.upstream = std::move(upstream);
  rule.methods = {"*"};
  rule.path = std::move(path);
  rule.enabled = false;
  return rule;
}

CacheRule allowRule(std::string upstream, std::vector<std::string> methods, std::string path,
                    std::string action, seconds ttl, seconds swr, seconds sie) {
  CacheRule rule;
  rule.upstream = std::move(upstream);
  rule.methods = std::move(methods);
  rule.path = std::move(path);
  rule.action = std::move(action);
  rule.ttl = ttl;
  rule.stale_while_revalidate = swr;
  rule.stale_if_error = sie;
  return rule;
}

// Calls fn(name, argument) for each directive of a Cache-Control-like list (RFC 9111 §5.2):
// comma-separated, `name` or `name=token` or `name="quoted, string"`. Quotes are stripped from
// the argument (escapes are left as they are: no directive we read takes a quoted value).
void forEachDirective(std::string_view value,
                      const std::function<void(std::string_view, std::string_view)>& fn) {
  size_t i = 0;
  while (i < value.size()) {
    size_t start = i;
    bool in_quotes = false;
    for (; i < value.size(); ++i) {
      const char c = value[i];
      if (in_quotes) {
        if (c == '\\' && i + 1 < value.size()) {
          ++i;
        } else if (c == '"') {
          in_quotes = false;
        }
      } else if (c == '"') {
        in_quotes = true;
      } else if (c == ',') {
        break;
      }
    }
    const std::string_view item = trimOws(value.substr(start, i - start));
    ++i;  // skip ','
    if (item.empty()) continue;
    const size_t eq = item.find('=');
    std::string_view name = trimOws(item.substr(0, eq));
    std::string_view arg;
    if (eq != std::string_view::npos) {
      arg = trimOws(item.substr(eq + 1));
      if (arg.size() >= 2 && arg.front() == '"' && arg.back() == '"') {
        arg = arg.substr(1, arg.size() - 2);
      }
    }
    fn(name, arg);
  }
}

// Every value of every header called `name`.
void forEachHeader(const Headers& headers, std::string_view name,
                   const std::function<void(std::string_view)>& fn) {
  for (const auto& header : headers) {
    if (iequals(header.name, name)) fn(header.value);
  }
}

// delta-seconds (RFC 9111 §1.2.2): digits only; too large saturates.
std::optional<seconds> parseDeltaSeconds(std::string_view arg) {
  if (arg.empty()) return std::nullopt;
  int64_t v = 0;
  for (const char c : arg) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
    if (v > (int64_t{1} << 31)) v = int64_t{1} << 31;  // RFC 9111: treat as "infinity"
  }
  return seconds(v);
}

void appendField(std::string& out, std::string_view field) {
  out += std::to_string(field.size());
  out += ':';
  out += field;
}

bool methodMatches(const CacheRule& rule, std::string_view method) {
  if (rule.methods.empty()) return method == "GET";
  for (const auto& m : rule.methods) {
    if (m == "*" || iequals(m, method)) return true;
  }
  return false;
}

}  // namespace

CachePolicyConfig defaultCachePolicy() {
  const seconds minute(60), half(30), hour(3600);
  CachePolicyConfig config;
  config.rules = {
      denyRule("*", "**/mcp"),
      denyRule("*", "**/mcp/**"),
      denyRule("bundleup-mcp", "**"),
      denyRule("bundleup-proxy", "**"),
      allowRule("bundleup-api", {"GET"}, "**", "", minute, half, hour),
      allowRule("bundleup-unify", {"GET"}, "**", "", minute, half, hour),
      allowRule("bundleiq", {"GET"}, "**", "", half, half, hour),
      allowRule("bosa", {"POST"}, "/connectors/*/*", "list_*", minute, half, hour),
      allowRule("bosa", {"POST"}, "/connectors/*/*", "search_*", minute, half, hour),
      allowRule("bosa", {"POST"}, "/connectors/*/*", "get_*", minute, half, hour),
  };
  return config;
}

Status validateCachePolicy(const CachePolicyConfig& config) {
  const auto bad = [](size_t index, const char* field, const std::string& what) -> Status {
    return Error::make(ErrorCode::kBadRequest, "cache.rules[" + std::to_string(index) + "]." +
                                                   field + ": " + what);
  };
  const auto badGlob = [](std::string_view glob) {
    return glob.find("***") != std::string_view::npos;
  };
  if (config.max_bytes == 0 && config.enabled) {
    return Error::make(ErrorCode::kBadRequest, "cache.max_bytes: must be greater than 0");
  }
  for (size_t i = 0; i < config.rules.size(); ++i) {
    const CacheRule& rule = config.rules[i];
    if (rule.upstream.empty()) return bad(i, "upstream", "must not be empty (use \"*\" for any)");
    if (badGlob(rule.upstream)) return bad(i, "upstream", "'***' is not a valid glob");
    for (const auto& method : rule.methods) {
      if (!isToken(method)) {
        return bad(i, "methods", "'" + method + "' is not an HTTP method");
      }
    }
    if (rule.path.empty() || (rule.path[0] != '/' && rule.path[0] != '*')) {
      return bad(i, "path", "must start with '/' or '*'");
    }
    if (badGlob(rule.path)) return bad(i, "path", "'***' is not a valid glob");
    if (rule.path.find('?') != std::string::npos) {
      return bad(i, "path", "a path glob never includes the query ('?')");
    }
    if (badGlob(rule.action)) return bad(i, "action", "'***' is not a valid glob");
    if (rule.ttl.count() < 0) return bad(i, "ttl", "must not be negative");
    if (rule.stale_while_revalidate.count() < 0) {
      return bad(i, "stale_while_revalidate", "must not be negative");
    }
    if (rule.stale_if_error.count() < 0) return bad(i, "stale_if_error", "must not be negative");
  }
  return okStatus();
}

namespace {

// The NFA of globMatch over token positions, with its state sets in caller-provided buffers so
// that the common case (short patterns) allocates nothing: this runs for every rule on every
// request.
enum GlobKind : unsigned char { kGlobLit, kGlobStar, kGlobAny };
struct GlobTok {
  GlobKind kind;
  char c;
};

bool globNfa(const GlobTok* toks, size_t m, std::string_view text, unsigned char* cur, unsigned char* next) {
  // State i means "tokens [0, i) have matched the text so far".
  const auto closure = [&](unsigned char* set) {
    for (size_t i = 0; i < m; ++i) {
      if (set[i] != 0 && toks[i].kind != kGlobLit) set[i + 1] = 1;  // a star may match nothing
    }
  };
  std::memset(cur, 0, m + 1);
  cur[0] = 1;
  closure(cur);
  for (const char c : text) {
    std::memset(next, 0, m + 1);
    bool any = false;
    for (size_t i = 0; i < m; ++i) {
      if (cur[i] == 0) continue;
      size_t to = i;  // stars stay on their own state
      switch (toks[i].kind) {
        case kGlobLit:
          if (toks[i].c != c) continue;
          to = i + 1;
          break;
        case kGlobStar:
          if (c == '/') continue;
          break;
        case kGlobAny:
          break;
      }
      next[to] = 1;
      any = true;
    }
    if (!any) return false;
    closure(next);
    std::swap(cur, next);
  }
  return cur[m] != 0;
}

}  // namespace

bool globMatch(std::string_view pattern, std::string_view text) {
  // "**<lit>" and "**<lit>**" with a star-free literal: the built-in deny rules "**/mcp" and
  // "**/mcp/**" that every request is tested against. A suffix test and one substring search,
  // before any scan of the pattern.
  if (pattern.size() > 2 && pattern[0] == '*' && pattern[1] == '*') {
    std::string_view literal = pattern.substr(2);
    const bool open_end = literal.size() > 2 && literal[literal.size() - 1] == '*' &&
                          literal[literal.size() - 2] == '*';
    if (open_end) literal.remove_suffix(2);
    if (literal.front() != '*' && literal.find('*') == std::string_view::npos) {
      if (!open_end) {
        return text.size() >= literal.size() && text.substr(text.size() - literal.size()) == literal;
      }
      // The size test first: an empty view's data() may be null, which memmem must not get.
      return text.size() >= literal.size() &&
             ::memmem(text.data(), text.size(), literal.data(), literal.size()) != nullptr;
    }
  }
  const size_t first_star = pattern.find('*');
  if (first_star == std::string_view::npos) return pattern == text;  // most upstream names
  if (pattern == "**") return true;                                  // the default path glob
  if (pattern == "*") return text.find('/') == std::string_view::npos;  // "any upstream"
  // The literal prefix and suffix must match as they are: cheap, and it settles most misses.
  if (text.substr(0, first_star) != pattern.substr(0, first_star)) return false;
  const size_t last_star = pattern.rfind('*');
  const std::string_view suffix = pattern.substr(last_star + 1);
  if (text.size() < first_star + suffix.size() ||
      text.substr(text.size() - suffix.size()) != suffix) {
    return false;
  }
  // Only '**' wildcards (e.g. the built-in "**/mcp/**" that every request is tested against):
  // the literals between them, found leftmost in order, decide (leftmost is optimal when a
  // wildcard can absorb anything). No NFA for the common case.
  {
    bool only_double = true;
    for (size_t i = first_star; i <= last_star && only_double;) {
      if (pattern[i] != '*') {
        ++i;
        continue;
      }
      size_t run = 0;
      while (i < pattern.size() && pattern[i] == '*') ++i, ++run;
      only_double = run >= 2;
    }
    if (only_double) {
      size_t pos = first_star;                     // text consumed by the prefix
      const size_t end = text.size() - suffix.size();  // the suffix is reserved
      size_t i = first_star;
      while (i < last_star) {
        while (pattern[i] == '*') ++i;
        const size_t lit_end = pattern.find('*', i);
        if (lit_end > last_star) break;  // reached the suffix
        const std::string_view literal = pattern.substr(i, lit_end - i);
        const size_t found = text.substr(0, end).find(literal, pos);
        if (found == std::string_view::npos) return false;
        pos = found + literal.size();
        i = lit_end;
      }
      return pos <= end;
    }
  }
  // Compile into tokens: a literal byte, '*' (no '/'), or '**' (anything).
  constexpr size_t kInline = 128;
  GlobTok inline_toks[kInline];
  unsigned char inline_sets[2 * (kInline + 1)];
  std::vector<GlobTok> heap_toks;
  std::vector<unsigned char> heap_sets;
  GlobTok* toks = inline_toks;
  unsigned char* sets = inline_sets;
  if (pattern.size() > kInline) {
    heap_toks.resize(pattern.size());
    heap_sets.resize(2 * (pattern.size() + 1));
    toks = heap_toks.data();
    sets = heap_sets.data();
  }
  size_t m = 0;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] != '*') {
      toks[m++] = {kGlobLit, pattern[i]};
    } else if (i + 1 < pattern.size() && pattern[i + 1] == '*') {
      toks[m++] = {kGlobAny, '*'};
      while (i + 1 < pattern.size() && pattern[i + 1] == '*') ++i;  // "***" acts as "**"
    } else {
      toks[m++] = {kGlobStar, '*'};
    }
  }
  // NFA simulation: O(|text| * |tokens|), no backtracking, whatever the pattern.
  return globNfa(toks, m, text, sets, sets + m + 1);
}

const CacheRule* matchRule(const CachePolicyConfig& config, std::string_view upstream,
                           std::string_view method, std::string_view path,
                           std::string_view bosa_action) {
  if (!config.enabled) return nullptr;
  for (const CacheRule& rule : config.rules) {
    if (!globMatch(rule.upstream, upstream)) continue;
    if (!methodMatches(rule, method)) continue;
    if (!rule.action.empty() && (bosa_action.empty() || !globMatch(rule.action, bosa_action))) {
      continue;
    }
    if (!globMatch(rule.path, path)) continue;
    return rule.enabled ? &rule : nullptr;
  }
  return nullptr;
}

std::string_view bosaActionName(std::string_view path) {
  constexpr std::string_view kPrefix = "/connectors/";
  if (path.substr(0, kPrefix.size()) != kPrefix) return {};
  const std::string_view rest = path.substr(kPrefix.size());
  const size_t slash = rest.find('/');
  if (slash == 0 || slash == std::string_view::npos) return {};
  const std::string_view action = rest.substr(slash + 1);
  if (action.empty() || action.find('/') != std::string_view::npos) return {};
  return action;
}

ClientCacheDirective clientDirective(const Headers& request_headers) {
  bool no_cache = false;
  bool no_store = false;
  forEachHeader(request_headers, "Cache-Control", [&](std::string_view value) {
    forEachDirective(value, [&](std::string_view name, std::string_view arg) {
      if (iequals(name, "no-store")) {
        no_store = true;
      } else if (iequals(name, "no-cache")) {
        no_cache = true;
      } else if (iequals(name, "max-age") && arg == "0") {
        no_cache = true;  // "do not give me anything older than 0 s" = fetch fresh
      }
    });
  });
  forEachHeader(request_headers, "Pragma", [&](std::string_view value) {
    forEachDirective(value, [&](std::string_view name, std::string_view) {
      if (iequals(name, "no-cache")) no_cache = true;
    });
  });
  if (no_store) return ClientCacheDirective::kNoStore;
  if (no_cache) return ClientCacheDirective::kNoCache;
  return ClientCacheDirective::kNormal;
}

StoreDecision storeDecision(const CacheRule& rule, int status, const Headers& response_headers) {
  StoreDecision no;
  if (!rule.enabled) {
    no.reason = "rule disabled";
    return no;
  }
  if (status < 200 || status > 299 || status == 206) {
    no.reason = "status not cacheable";
    return no;
  }
  if (findHeader(response_headers, "Set-Cookie") != nullptr) {
    no.reason = "Set-Cookie";
    return no;
  }
  // Vary: the key covers the identity headers (credentials are replaced by what keyway injects,
  // which the identity names) and Accept-Encoding (bodies are stored identity-encoded). Any
  // other varied header would need to be part of the key; rather than guess, do not store.
  static constexpr std::string_view kCovered[] = {
      "Accept-Encoding", "BU-Connection-Id", "X-Bosa-Integration", "BU-Include-Raw", "X-Keyway-User", "X-Keyway-Token"};
  bool vary_ok = true;
  forEachHeader(response_headers, "Vary", [&](std::string_view value) {
    forEachDirective(value, [&](std::string_view name, std::string_view) {
      const bool covered = isCredentialHeaderName(name) ||
                           std::any_of(std::begin(kCovered), std::end(kCovered),
                                       [&](std::string_view c) { return iequals(c, name); });
      if (!covered) vary_ok = false;  // includes "*"
    });
  });
  if (!vary_ok) {
    no.reason = "Vary on a header outside the key";
    return no;
  }
  if (auto type = headerValue(response_headers, "Content-Type")) {
    const std::string_view media = trimOws(type->substr(0, type->find(';')));
    if (iequals(media, "text/event-stream")) {
      no.reason = "event stream";
      return no;
    }
  }
  bool encoded = false;
  forEachHeader(response_headers, "Content-Encoding", [&](std::string_view value) {
    forEachDirective(value, [&](std::string_view coding, std::string_view) {
      if (!iequals(coding, "identity")) encoded = true;
    });
  });
  if (encoded) {
    no.reason = "content-encoded body";
    return no;
  }

  StoreDecision yes;
  yes.store = true;
  yes.ttl = rule.ttl;
  yes.swr = rule.stale_while_revalidate;
  yes.sie = rule.stale_if_error;
  if (!rule.ignore_upstream_cache_control) {
    bool forbidden = false;
    std::optional<seconds> max_age, s_maxage, swr, sie;
    forEachHeader(response_headers, "Cache-Control", [&](std::string_view value) {
      forEachDirective(value, [&](std::string_view name, std::string_view arg) {
        if (iequals(name, "no-store") || iequals(name, "private") || iequals(name, "no-cache")) {
          forbidden = true;
        } else if (iequals(name, "max-age")) {
          max_age = parseDeltaSeconds(arg);
        } else if (iequals(name, "s-maxage")) {
          s_maxage = parseDeltaSeconds(arg);
        } else if (iequals(name, "stale-while-revalidate")) {
          swr = parseDeltaSeconds(arg);
        } else if (iequals(name, "stale-if-error")) {
          sie = parseDeltaSeconds(arg);
        }
      });
    });
    forEachHeader(response_headers, "Pragma", [&](std::string_view value) {
      forEachDirective(value, [&](std::string_view name, std::string_view) {
        if (iequals(name, "no-cache")) forbidden = true;
      });
    });
    if (forbidden) {
      no.reason = "upstream Cache-Control forbids storing";
      return no;
    }
    if (s_maxage) {
      yes.ttl = *s_maxage;  // a shared cache prefers s-maxage (RFC 9111 §5.2.2.10)
    } else if (max_age) {
      yes.ttl = *max_age;
    }
    if (swr) yes.swr = *swr;
    if (sie) yes.sie = *sie;
  }
  if (yes.ttl.count() <= 0 && yes.swr.count() <= 0 && yes.sie.count() <= 0) {
    no.reason = "nothing to keep (all windows are 0)";
    return no;
  }
  yes.ttl = std::max(yes.ttl, seconds(0));
  yes.swr = std::max(yes.swr, seconds(0));
  yes.sie = std::max(yes.sie, seconds(0));
  return yes;
}

FreshnessWindow freshnessWindow(int64_t stored_unix_ms, const StoreDecision& decision) {
  FreshnessWindow w;
  const int64_t ttl_ms = std::chrono::duration_cast<std::chrono::milliseconds>(decision.ttl).count();
  const int64_t stale_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::max(decision.swr, decision.sie))
          .count();
  w.fresh_until_unix_ms = stored_unix_ms + ttl_ms;
  w.stale_until_unix_ms = w.fresh_until_unix_ms + stale_ms;
  return w;
}

CacheFreshness cacheFreshness(int64_t now_unix_ms, int64_t fresh_until_unix_ms,
                              int64_t stale_until_unix_ms, seconds swr, seconds sie) {
  if (now_unix_ms < fresh_until_unix_ms) return CacheFreshness::kFresh;
  const int64_t swr_end = std::min(
      stale_until_unix_ms,
      fresh_until_unix_ms + std::chrono::duration_cast<std::chrono::milliseconds>(swr).count());
  if (now_unix_ms < swr_end) return CacheFreshness::kStale;
  const int64_t sie_end = std::min(
      stale_until_unix_ms,
      fresh_until_unix_ms + std::chrono::duration_cast<std::chrono::milliseconds>(sie).count());
  if (now_unix_ms < sie_end) return CacheFreshness::kStaleIfError;
  return CacheFreshness::kExpired;
}

std::string canonicalQuery(std::string_view query) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (start <= query.size()) {
    size_t amp = query.find('&', start);
    if (amp == std::string_view::npos) amp = query.size();
    if (amp > start) parts.push_back(query.substr(start, amp - start));
    start = amp + 1;
  }
  const auto keyOf = [](std::string_view part) { return part.substr(0, part.find('=')); };
  std::stable_sort(parts.begin(), parts.end(), [&](std::string_view a, std::string_view b) {
    return keyOf(a) < keyOf(b);
  });
  std::string out;
  out.reserve(query.size());
  for (size_t i = 0; i < parts.size(); ++i) {
    if (i > 0) out += '&';
    out += parts[i];
  }
  return out;
}

std::string cacheKey(std::string_view upstream, std::string_view method, std::string_view path,
                     std::string_view query, std::string_view canonical_body,
                     const CacheIdentity& id) {
  const std::string canonical_query = canonicalQuery(query);
  std::string key;
  key.reserve(64 + upstream.size() + method.size() + path.size() + canonical_query.size() +
              canonical_body.size() + id.credential.size() + id.bosa_user.size() +
              id.connection_id.size() + id.bosa_integration.size() + id.include_raw.size() +
              id.passthrough.size());
  // Format version: bump when the layout or the identity's meaning changes (entries under an old
  // version become unreachable and age out).
  key += "kwc2|";
  for (std::string_view field :
       {upstream, method, path, std::string_view(canonical_query), canonical_body,
        std::string_view(id.credential), std::string_view(id.bosa_user),
        std::string_view(id.connection_id), std::string_view(id.bosa_integration),
        std::string_view(id.include_raw), std::string_view(id.passthrough)}) {
    appendField(key, field);
  }
  return key;
}

std::string identityTag(const CacheIdentity& id) {
  std::string tag = "kwi2|";
  appendField(tag, id.credential);
  appendField(tag, id.bosa_user);
  appendField(tag, id.connection_id);
  appendField(tag, id.passthrough);
  return tag;
}

bool isCredentialHeaderName(std::string_view name) {
  static constexpr std::string_view kWords[] = {"auth", "token", "key", "secret", "session", "cookie",
                                                "password", "signature"};
  for (std::string_view word : kWords) {
    if (name.size() < word.size()) continue;
    for (size_t i = 0; i + word.size() <= name.size(); ++i) {
      if (iequals(name.substr(i, word.size()), word)) return true;
    }
  }
  return false;
}

CacheIdentity cacheIdentity(const IdentitySources& in, const KeyedHash& keyed_hash) {
  CacheIdentity id;
  if (!in.credential_name.empty()) {
    id.credential.reserve(in.credential_name.size() + in.credential_scope.size() + in.credential_fingerprint.size() + 2);
    id.credential.append(in.credential_name).append(1, '@').append(in.credential_scope).append(1, '#').append(
        in.credential_fingerprint);
  }
  id.bosa_user = std::string(in.bosa_user);
  std::string credentials;  // the passed-through credential fields, wiped after hashing
  for (const Header& h : in.forwarded) {
    std::string* view = nullptr;
    if (iequals(h.name, "BU-Connection-Id")) {
      view = &id.connection_id;
    } else if (iequals(h.name, "X-Bosa-Integration")) {
      view = &id.bosa_integration;
    } else if (iequals(h.name, "BU-Include-Raw")) {
      view = &id.include_raw;
    }
    if (view != nullptr) {
      // Every field line counts: an upstream may read the first, the last or all of them.
      if (!view->empty()) view->append(", ");
      view->append(h.value);
      continue;
    }
    if (!isCredentialHeaderName(h.name)) continue;
    if (!in.credential_header.empty() && iequals(h.name, in.credential_header)) continue;  // keyway's own
    if (!in.bosa_user.empty() && iequals(h.name, "Authorization")) continue;              // the minted token
    for (char c : h.name) credentials.push_back(static_cast<char>(c >= 'A' && c <= 'Z' ? c + 32 : c));
    credentials.push_back(':');
    credentials.append(h.value);
    credentials.push_back('\n');
  }
  if (!credentials.empty()) {
    id.passthrough = keyed_hash(credentials);
    std::fill(credentials.begin(), credentials.end(), '\0');
  }
  return id;
}

bool invalidatesOnSuccess(std::string_view method) {
  return iequals(method, "POST") || iequals(method, "PUT") || iequals(method, "PATCH") ||
         iequals(method, "DELETE");
}

std::vector<std::string> invalidationPaths(std::string_view path) {
  std::vector<std::string> out;
  const auto add = [&out](std::string p) {
    if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(std::move(p));
  };
  std::string_view resource = path;
  while (resource.size() > 1 && resource.back() == '/') resource.remove_suffix(1);
  if (resource.empty() || resource == "/") {
    add("/");
    return out;
  }
  add(std::string(resource));
  add(std::string(resource) + "/");
  const size_t slash = resource.find_last_of('/');
  if (slash == std::string_view::npos) return out;  // not origin-form: nothing else to guess
  const std::string_view collection = resource.substr(0, slash);
  if (collection.empty()) {
    add("/");
  } else {
    add(std::string(collection));
    add(std::string(collection) + "/");
  }
  return out;
}

std::optional<std::string> bosaConnectorPrefix(std::string_view path) {
  constexpr std::string_view kPrefix = "/connectors/";
  if (path.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  const size_t slash = path.find('/', kPrefix.size());
  if (slash == std::string_view::npos || slash == kPrefix.size()) return std::nullopt;
  return std::string(path.substr(0, slash + 1));
}

}  // namespace keyway::core

// keywayctl schemas list|refresh: the BOSA schemas keywayd validates inputs against (docs/bosa.md).
#include "daemon/ctl/groups.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <sstream>
#include <string_view>

#include "core/bosa_catalog.hpp"
#include "daemon/schema_fetch.hpp"
#include "storage/file_util.hpp"
#include "storage/lmdb_schema_store.hpp"

namespace keyway::daemon::ctl {
namespace {

using core::ErrorCode;

// Connector names for `schemas refresh CONNECTOR`: RFC 3986 unreserved characters only, so the
// name goes into `?modules=` as is (BOSA connector names are snake_case or hyphenated).
constexpr size_t kMaxConnectorName = 128;
// The BOSA SDK's own discovery timeout (docs/bosa.md).
constexpr std::chrono::milliseconds kSchemaFetchTimeout{30000};

std::vector<const core::UpstreamConfig*> bosaUpstreams(const core::Config& config) {
  std::vector<const core::UpstreamConfig*> out;
  for (const auto& u : config.upstreams) {
    if (u.protocol == core::Protocol::kBosa) out.push_back(&u);
  }
  return out;
}

std::string plural(size_t n, const std::string& word) {
  return std::to_string(n) + " " + word + (n == 1 ? "" : "s");
}

// Text that came from an upstream (schema pointers, messages, error bodies) is shown escaped: a
// document must not be able to drive the operator's terminal. Cut at `max` bytes.
std::string printable(std::string_view s, size_t max = 400) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < max; ++i) {
    const auto u = static_cast<unsigned char>(s[i]);
    if (u < 0x20 || u == 0x7f) {
      static const char* kHex = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += s[i];
    }
  }
  if (s.size() > max) out += "...";
  return out;
}

int64_t nowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "45s", "12m 5s", "3h 2m", "4d 1h".
std::string formatAge(int64_t ms) {
  if (ms < 0) return "in the future: check the clock";
  int64_t s = ms / 1000;
  std::ostringstream o;
  if (s < 60) {
    o << s << "s";
  } else if (s < 3600) {
    o << s / 60 << "m " << s % 60 << "s";
  } else if (s < 86400) {
    o << s / 3600 << "h " << (s % 3600) / 60 << "m";
  } else {
    o << s / 86400 << "d " << (s % 86400) / 3600 << "h";
  }
  o << " ago";
  return o.str();
}

std::string catalogSummary(const core::BosaCatalog& catalog) {
  std::string s = plural(catalog.connectorNames().size(), "connector") + ", " +
                  plural(catalog.actionCount(), "action") + ", " +
                  plural(catalog.issueCount(), "unenforced construct");
  if (!catalog.problems().empty()) s += ", " + plural(catalog.problems().size(), "catalog problem");
  return s;
}

bool canUse(const std::string& path, int mode) { return ::access(path.c_str(), mode) == 0; }

// Opens the schema environment (<state_dir>/schemas) that keywayd uses. For reading, a missing
// environment is not an error: `store` stays null (nothing stored yet; keywayctl creates nothing
// then). For writing, the state directory must exist (keywayd or `keywayctl init` makes it), and
// keywayctl refuses to create the environment in a state directory another user owns: files it
// creates (0600) would be unreadable to keywayd. Returns kCtlExitOk or the exit code of the
// error it printed.
int openSchemaStore(Context& c, bool for_write, std::shared_ptr<storage::LmdbSchemaStore>* store) {
  const std::string& state_dir = c.config->state_dir;
  const std::string env_dir = storage::schemaEnvPath(state_dir);
  struct stat st {};
  const bool env_exists = ::stat(env_dir.c_str(), &st) == 0;
  if (!env_exists && !for_write) return kCtlExitOk;
  const std::string as_daemon_user = "; run keywayctl as the user keywayd runs as";
  if (env_exists) {
    if (!S_ISDIR(st.st_mode)) {
      return c.fail("the schema store path " + env_dir + " is not a directory", kCtlExitFailure);
    }
    // LMDB readers write their slot into lock.mdb, so even `list` needs write access.
    for (const std::string& p : {env_dir, env_dir + "/data.mdb", env_dir + "/lock.mdb"}) {
      if (storage::pathExists(p) && !canUse(p, R_OK | W_OK)) {
        return c.fail("no permission to use the schema store at " + env_dir + as_daemon_user,
                      kCtlExitFailure);
      }
    }
  } else {
    struct stat state {};
    if (::stat(state_dir.c_str(), &state) != 0 || !S_ISDIR(state.st_mode)) {
      return c.fail("no state directory at " + state_dir +
                        " yet; run `keywayctl init` (or start keywayd) first (" + c.whereHint() +
                        ")",
                    kCtlExitFailure);
    }
    if (!canUse(state_dir, W_OK | X_OK)) {
      return c.fail("no permission to write in the state directory " + state_dir +
                        as_daemon_user,
                    kCtlExitFailure);
    }
    if (state.st_uid != ::geteuid()) {
      return c.fail("the state directory " + state_dir + " belongs to uid " +
                        std::to_string(state.st_uid) + ", not to this user; the schema store "
                        "created now would be unreadable to keywayd" + as_daemon_user,
                    kCtlExitFailure);
    }
  }
  auto opened = storage::LmdbSchemaStore::open(state_dir);
  if (!opened) {
    return c.fail("cannot open the schema store: " + opened.error().message, kCtlExitFailure);
  }
  *store = std::move(opened).value();
  return kCtlExitOk;
}

void printSchemas(Context& c, const core::UpstreamConfig& upstream,
                  const core::StoredSchemas& stored, const core::BosaCatalog& catalog) {
  std::ostream& out = c.out;
  const int64_t now = nowUnixMs();
  out << "upstream " << upstream.name << " (" << upstream.base_url << ")\n";
  std::vector<std::vector<std::string>> head = {
      {"  fetched:", stored.fetched_unix_ms <= 0
                         ? std::string("-")
                         : formatTime(stored.fetched_unix_ms / 1000) + " (" +
                               formatAge(now - stored.fetched_unix_ms) + ")"},
      {"  document:", formatBytes(stored.document.size())},
      {"  catalog:", catalogSummary(catalog)},
  };
  printTable(out, head);
  const auto names = catalog.connectorNames();
  if (!names.empty()) {
    std::vector<std::vector<std::string>> rows = {{"  CONNECTOR", "ACTIONS", "UNENFORCED"}};
    for (const auto& name : names) {
      const core::BosaConnector* connector = catalog.connector(name);
      size_t issues = 0;
      for (const auto& [action_name, action] : connector->actions) issues += action.issues.size();
      rows.push_back({"  " + printable(name, 120), std::to_string(connector->actions.size()),
                      std::to_string(issues)});
    }
    printTable(out, rows);
  }
  if (catalog.issueCount() > 0) {
    out << "  unenforced constructs (keyway cannot check these):\n";
    for (const auto& name : names) {
      for (const auto& [action_name, action] : catalog.connector(name)->actions) {
        for (const auto& issue : action.issues) {
          out << "    " << printable(name, 120) << "/" << printable(action_name, 120) << ": "
              << printable(issue.schema_pointer) << ": " << printable(issue.message) << "\n";
        }
      }
    }
  }
  if (!catalog.problems().empty()) {
    out << "  catalog problems (entries keyway skipped or ignored):\n";
    for (const auto& p : catalog.problems()) {
      std::string where = printable(p.connector, 120);
      if (!p.action.empty()) where += "/" + printable(p.action, 120);
      out << "    " << (where.empty() ? std::string("(document)") : where) << ": "
          << printable(p.message) << "\n";
    }
  }
}

// One upstream of `schemas list --json` (docs/cli.md). Text from the document is JSON-escaped,
// so it cannot drive a terminal there either.
std::string schemasJson(const core::UpstreamConfig& upstream, const core::StoredSchemas* stored,
                        const core::BosaCatalog* catalog, const std::string& error) {
  std::vector<std::string> connectors;
  std::vector<std::string> unenforced;
  std::vector<std::string> problems;
  if (catalog != nullptr) {
    for (const auto& name : catalog->connectorNames()) {
      const core::BosaConnector* connector = catalog->connector(name);
      size_t issues = 0;
      for (const auto& [action_name, action] : connector->actions) {
        issues += action.issues.size();
        for (const auto& issue : action.issues) {
          unenforced.push_back(JsonObject()
                                   .str("connector", name)
                                   .str("action", action_name)
                                   .str("pointer", issue.schema_pointer)
                                   .str("reason", issue.message)
                                   .text());
        }
      }
      connectors.push_back(JsonObject()
                               .str("name", name)
                               .num("actions", uint64_t{connector->actions.size()})
                               .num("unenforced", uint64_t{issues})
                               .text());
    }
    for (const auto& p : catalog->problems()) {
      problems.push_back(JsonObject()
                             .strOrNull("connector", p.connector)
                             .strOrNull("action", p.action)
                             .str("message", p.message)
                             .text());
    }
  }
  auto array = [](const std::vector<std::string>& items) {
    return "[" + joinList(items, ",") + "]";
  };
  return JsonObject()
      .str("upstream", upstream.name)
      .str("base_url", upstream.base_url)
      .boolean("stored", stored != nullptr)
      .time("fetched", stored == nullptr ? 0 : stored->fetched_unix_ms / 1000)
      .num("document_bytes", uint64_t{stored == nullptr ? 0 : stored->document.size()})
      .raw("connectors", array(connectors))
      .raw("unenforced", array(unenforced))
      .raw("problems", array(problems))
      .strOrNull("error", error)
      .text();
}

int cmdSchemasList(Context& c) {
  const bool json = c.flag("--json");
  const auto upstreams = bosaUpstreams(*c.config);
  if (upstreams.empty()) {
    if (json) {
      c.out << "[]\n";
    } else {
      c.out << "no BOSA upstreams configured (upstreams with protocol bosa); nothing to list\n";
    }
    return kCtlExitOk;
  }
  std::shared_ptr<storage::LmdbSchemaStore> store;
  if (int rc = openSchemaStore(c, false, &store); rc != kCtlExitOk) return rc;
  int rc = kCtlExitOk;
  std::vector<std::string> objects;
  for (size_t i = 0; i < upstreams.size(); ++i) {
    const core::UpstreamConfig& u = *upstreams[i];
    if (i != 0 && !json) c.out << "\n";
    std::optional<core::StoredSchemas> stored;
    if (store) {
      auto loaded = store->load(u.name);
      if (!loaded) {
        rc = c.fail("upstream '" + u.name + "': " + loaded.error().message, kCtlExitFailure);
        if (json) objects.push_back(schemasJson(u, nullptr, nullptr, loaded.error().message));
        continue;
      }
      stored = std::move(loaded).value();
    }
    if (!stored) {
      if (json) {
        objects.push_back(schemasJson(u, nullptr, nullptr, ""));
      } else {
        c.out << "no schemas stored yet for upstream '" << u.name
              << "' (they are fetched on first use, or run: keywayctl schemas refresh)\n";
      }
      continue;
    }
    auto catalog = core::BosaCatalog::parse(stored->document);
    if (!catalog) {
      const std::string why = "the stored document is unusable (" +
                              printable(catalog.error().message) +
                              "); replace it with `keywayctl schemas refresh`";
      rc = c.fail("upstream '" + u.name + "': " + why, kCtlExitFailure);
      if (json) objects.push_back(schemasJson(u, &*stored, nullptr, why));
      continue;
    }
    if (json) {
      objects.push_back(schemasJson(u, &*stored, catalog->get(), ""));
    } else {
      printSchemas(c, u, *stored, **catalog);
    }
  }
  if (json) c.out << jsonArray(objects) << "\n";
  return rc;
}

enum class RefreshOutcome { kStored, kNoSuchConnector, kFailed };

RefreshOutcome refreshUpstream(Context& c, storage::LmdbSchemaStore& store,
                               const core::UpstreamConfig& u,
                               const std::optional<std::string>& connector) {
  auto current = store.load(u.name);
  if (!current) {
    c.fail(u.name + ": " + current.error().message + "; nothing was fetched", kCtlExitFailure);
    return RefreshOutcome::kFailed;
  }
  const bool have = current->has_value();
  const std::string kept = have ? "the stored document was kept" : "nothing was stored";
  const std::string url =
      u.base_url + (connector ? "/connectors/?modules=" + *connector : std::string("/connectors"));

  SchemaFetchOptions options;
  options.connect_timeout = u.connect_timeout;
  options.total_timeout = kSchemaFetchTimeout;
  options.tls = u.tls;
  auto fetched = fetchSchemaDocument(url, options);
  if (!fetched) {
    c.fail(u.name + ": " + fetched.error().message + "; " + kept, kCtlExitFailure);
    return RefreshOutcome::kFailed;
  }
  if (fetched->status != 200) {
    // An error page is shown on one line: whitespace runs (HTML indentation) become one space.
    std::string flat;
    for (char ch : std::string_view(fetched->body).substr(0, 4096)) {
      const bool space = ch == ' ' || ch == '\n' || ch == '\r' || ch == '\t';
      if (!space) {
        flat += ch;
      } else if (!flat.empty() && flat.back() != ' ') {
        flat += ' ';
      }
    }
    while (!flat.empty() && flat.back() == ' ') flat.pop_back();
    const std::string body = printable(flat, 200);
    c.fail(u.name + ": GET " + url + " answered HTTP " + std::to_string(fetched->status) +
               (body.empty() ? std::string() : " (" + body + ")") + "; " + kept,
           kCtlExitFailure);
    return RefreshOutcome::kFailed;
  }
  // Never replace a good document with garbage: what is stored must parse as a catalog.
  auto catalog = core::BosaCatalog::parse(fetched->body);
  if (!catalog) {
    c.fail(u.name + ": GET " + url + " answered 200 but not a discovery document (" +
               printable(catalog.error().message) + "); " + kept,
           kCtlExitFailure);
    return RefreshOutcome::kFailed;
  }

  std::string document;
  std::string summary;
  if (!connector) {
    if (catalog.value()->connectorNames().empty() && have) {
      auto old = core::BosaCatalog::parse((*current)->document);
      if (old && !old.value()->connectorNames().empty()) {
        c.fail(u.name + ": GET " + url + " answered a discovery document without any connector; " +
                   "the stored document was kept (" +
                   plural(old.value()->connectorNames().size(), "connector") + ")",
               kCtlExitFailure);
        return RefreshOutcome::kFailed;
      }
    }
    document = std::move(fetched->body);
    summary = u.name + ": " + catalogSummary(**catalog) + ", stored";
  } else {
    auto merged = mergeConnector(have ? &(*current)->document : nullptr, fetched->body, *connector);
    if (!merged) {
      if (merged.error().code == ErrorCode::kNotFound) {
        c.out << u.name << ": no connector '" << *connector
              << "' at the upstream; the stored document is unchanged\n";
        return RefreshOutcome::kNoSuchConnector;
      }
      c.fail(u.name + ": cannot merge connector '" + *connector + "': " +
                 printable(merged.error().message) + "; " + kept,
             kCtlExitFailure);
      return RefreshOutcome::kFailed;
    }
    auto whole = core::BosaCatalog::parse(*merged);
    if (!whole) {
      c.fail(u.name + ": the merged document does not parse (" +
                 printable(whole.error().message) + "); " + kept,
             kCtlExitFailure);
      return RefreshOutcome::kFailed;
    }
    const core::BosaConnector* fresh = whole.value()->connector(*connector);
    size_t issues = 0;
    if (fresh != nullptr) {
      for (const auto& [name, action] : fresh->actions) issues += action.issues.size();
    }
    summary = u.name + ": connector '" + *connector + "' refreshed (" +
              plural(fresh != nullptr ? fresh->actions.size() : 0, "action") + ", " +
              plural(issues, "unenforced construct") + "); document: " +
              catalogSummary(**whole) + ", stored";
    document = std::move(merged).value();
  }
  auto saved = store.save(u.name, {std::move(document), nowUnixMs()});
  if (!saved) {
    c.fail(u.name + ": " + saved.error().message, kCtlExitFailure);
    return RefreshOutcome::kFailed;
  }
  c.out << summary << "\n";
  return RefreshOutcome::kStored;
}

int cmdSchemasRefresh(Context& c) {
  std::optional<std::string> connector;
  if (c.args.words.size() > 2) {
    connector = c.word(2);
    const bool ok = !connector->empty() && connector->size() <= kMaxConnectorName &&
                    std::all_of(connector->begin(), connector->end(), [](char ch) {
                      return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                             (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' ||
                             ch == '~';
                    });
    if (!ok) {
      return c.fail("invalid connector name '" + printable(*connector, 130) +
                        "': 1.." + std::to_string(kMaxConnectorName) +
                        " of letters, digits, '-', '_', '.', '~' (one connector at a time)",
                    kCtlExitUsage);
    }
  }
  const auto upstreams = bosaUpstreams(*c.config);
  if (upstreams.empty()) {
    return c.fail("no BOSA upstreams configured (upstreams with protocol bosa); nothing to refresh",
                  kCtlExitUsage);
  }
  std::shared_ptr<storage::LmdbSchemaStore> store;
  if (int rc = openSchemaStore(c, true, &store); rc != kCtlExitOk) return rc;
  size_t failed = 0;
  size_t missing = 0;
  for (const auto* u : upstreams) {
    switch (refreshUpstream(c, *store, *u, connector)) {
      case RefreshOutcome::kStored:
        break;
      case RefreshOutcome::kNoSuchConnector:
        ++missing;
        break;
      case RefreshOutcome::kFailed:
        ++failed;
        break;
    }
  }
  if (failed > 0) return kCtlExitFailure;
  if (missing == upstreams.size()) {
    return c.fail("no configured BOSA upstream has a connector '" + *connector + "'",
                  kCtlExitUsage);
  }
  return kCtlExitOk;
}

}  // namespace

const CommandGroup& schemasGroup() {
  static const CommandGroup group = {
      "schemas",
      "usage: keywayctl schemas list [--json]\n"
      "       keywayctl schemas refresh [CONNECTOR]\n"
      "\n"
      "Works on the BOSA schema store of the state directory (<state_dir>/schemas), the one a\n"
      "running keywayd serves discovery from and validates action inputs against.\n"
      "`schemas list` shows, per BOSA upstream, when its discovery document was fetched, each\n"
      "connector with its action count and the number of schema constructs keyway cannot\n"
      "enforce, then each such construct (connector/action: schema pointer: why) and any\n"
      "catalog problem (entries skipped as malformed).\n"
      "`schemas refresh` fetches GET <base_url>/connectors from every BOSA upstream (no\n"
      "credentials are sent) and stores it; with CONNECTOR it fetches\n"
      "<base_url>/connectors/?modules=CONNECTOR and replaces only that connector in the stored\n"
      "document. A running keywayd uses the new document on its next request. An answer that\n"
      "is not 200 or not a discovery document is never stored (exit 2, the old one is kept).\n",
      {
          // Neither opens the credential store: the schema store is opened by the command, as
          // needed (list creates nothing).
          {"list", 0, 0, {}, {"--json"}, {}, "keywayctl schemas list [--json]", Store::kNone,
           Input::kNone, cmdSchemasList},
          {"refresh", 0, 1, {}, {}, {}, "keywayctl schemas refresh [CONNECTOR]", Store::kNone,
           Input::kNone, cmdSchemasRefresh},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl

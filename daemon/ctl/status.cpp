// keywayctl status: what the running keywayd serves from where (GET /_keyway/status), and whether
// it reads the credential store this keywayctl edits.
#include "daemon/ctl/status.hpp"

#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>
#include <sys/stat.h>

#include <chrono>
#include <iostream>

#include "core/config_parse.hpp"
#include "daemon/ctl/groups.hpp"
#include "daemon/http_fetch.hpp"
#include "daemon/status_report.hpp"
#include "storage/lmdb_credential_store.hpp"

namespace keyway::daemon::ctl {

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

bool sameStore(const StoreIdentity& a, const StoreIdentity& b) {
  if (a.inode != 0 && b.inode != 0) return a.device == b.device && a.inode == b.inode;
  return a.path == b.path;
}

LocalStore describeLocalStore(const Context& c) {
  LocalStore l;
  if (c.config_file) l.config_file = absolutePath(*c.config_file);
  l.state_dir = absolutePath(c.config->state_dir);
  l.master_key_file = absolutePath(c.config->master_key_file);
  l.store.path = storage::credentialEnvPath(l.state_dir);
  struct stat st {};
  if (::stat(l.store.path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    l.problem = "no credential store at " + l.store.path + " (`keywayctl init` creates one)";
    return l;
  }
  l.exists = true;
  l.store.device = static_cast<uint64_t>(st.st_dev);
  l.store.inode = static_cast<uint64_t>(st.st_ino);
  if (c.store != nullptr) {
    l.generation = c.store->generation();
    return l;
  }
  auto opened = storage::openLmdbCredentialStore(c.config->state_dir, c.config->master_key_file);
  if (opened) {
    l.generation = (*opened)->generation();
  } else {
    l.problem = opened.error().message;
  }
  return l;
}

std::optional<std::string> daemonAddress(const core::ListenAddress& listen) {
  if (listen.port == 0) return std::nullopt;
  core::ListenAddress target = listen;
  if (target.host.empty() || target.host == "0.0.0.0") target.host = "127.0.0.1";
  if (target.host == "::") target.host = "::1";
  return target.toString();
}

const rapidjson::Value* jsonMember(const rapidjson::Value& object, const char* name) {
  if (!object.IsObject()) return nullptr;
  auto it = object.FindMember(name);
  return it == object.MemberEnd() ? nullptr : &it->value;
}

std::string jsonString(const rapidjson::Value& object, const char* name) {
  const rapidjson::Value* v = jsonMember(object, name);
  return v != nullptr && v->IsString() ? std::string(v->GetString(), v->GetStringLength()) : std::string();
}

std::optional<int64_t> jsonInt(const rapidjson::Value& object, const char* name) {
  const rapidjson::Value* v = jsonMember(object, name);
  if (v != nullptr && v->IsInt64()) return v->GetInt64();
  if (v != nullptr && v->IsUint64()) return static_cast<int64_t>(v->GetUint64());
  return std::nullopt;
}

bool jsonBool(const rapidjson::Value& object, const char* name) {
  const rapidjson::Value* v = jsonMember(object, name);
  return v != nullptr && v->IsBool() && v->GetBool();
}

namespace {

uint64_t jsonUint(const rapidjson::Value& object, const char* name) {
  const rapidjson::Value* v = jsonMember(object, name);
  return v != nullptr && v->IsUint64() ? v->GetUint64() : 0;
}

void readDocument(DaemonAnswer& a) {
  a.state_dir = jsonString(a.doc, "state_dir");
  const std::string config_file = jsonString(a.doc, "config_file");
  if (!config_file.empty()) a.config_file = config_file;
  if (const rapidjson::Value* store = jsonMember(a.doc, "credential_store")) {
    a.store.path = jsonString(*store, "path");
    a.store.device = jsonUint(*store, "device");
    a.store.inode = jsonUint(*store, "inode");
    if (auto g = jsonInt(*store, "generation")) a.generation = static_cast<uint64_t>(*g);
  }
}

}  // namespace

DaemonAnswer askDaemon(const Context& c) {
  DaemonAnswer a;
  std::optional<std::string> address = c.option("--address");
  if (!address) address = daemonAddress(c.config->listen);
  if (!address) {
    a.reach = Reach::kNoAddress;
    a.problem = "the configuration's listen address has port 0 (any free port), so keywayctl cannot "
                "know where keywayd listens; pass --address HOST:PORT (keywayd's \"listening\" log "
                "line names it)";
    return a;
  }
  a.address = *address;
  HttpFetchOptions options;
  // keywayd answers from memory on its own host: a second is plenty, more means it is stuck.
  options.connect_timeout = std::chrono::seconds(2);
  options.total_timeout = std::chrono::seconds(5);
  options.max_body_bytes = 1u << 20;
  const std::string url = "http://" + a.address + "/_keyway/status";
  HttpFetchResult got = httpFetch(url, options);
  if (got.error) {
    const bool nobody = got.error->code == core::ErrorCode::kUpstreamUnreachable ||
                        got.error->code == core::ErrorCode::kUpstreamTimeout;
    std::string what = got.error->message;
    if (const std::string said = "GET " + url + ": "; what.compare(0, said.size(), said) == 0) what.erase(0, said.size());
    a.reach = nobody ? Reach::kNotRunning : Reach::kFailed;
    a.problem = (nobody ? "no keywayd answers at " : "cannot ask keywayd at ") + a.address + ": " + what;
    return a;
  }
  const long status = got.response.status;
  if (status == 200) {
    a.doc.Parse(got.response.body.data(), got.response.body.size());
    if (!a.doc.HasParseError() && a.doc.IsObject() && jsonMember(a.doc, "credential_store") != nullptr) {
      a.reach = Reach::kAnswered;
      readDocument(a);
      return a;
    }
    a.reach = Reach::kFailed;
    a.problem = a.address + " answered GET /_keyway/status with something that is not keywayd's status "
                            "document; is another server listening there?";
    return a;
  }
  a.reach = Reach::kFailed;
  if (status == 404) {
    a.problem = a.address + " answers, but has no /_keyway/status: a keywayd older than this keywayctl "
                            "(restart it on the new version), or another server";
  } else if (status == 403) {
    a.problem = "keywayd at " + a.address + " refuses /_keyway/status to this client: it answers only "
                                            "clients on its own host (loopback)";
  } else {
    a.problem = a.address + " answered HTTP " + std::to_string(status) + " to GET /_keyway/status";
  }
  return a;
}

std::string otherStoreHint(const DaemonAnswer& daemon, const LocalStore& local) {
  if (daemon.config_file && daemon.config_file == local.config_file) {
    // One file, two directories: its state_dir is empty or relative, so the environment decides.
    return "the same configuration file gives keywayctl another state directory (an empty state_dir means "
           "$STATE_DIRECTORY, else ./keyway-state in the working directory): run keywayctl with "
           "STATE_DIRECTORY=" +
           daemon.state_dir + ", or set state_dir: " + daemon.state_dir + " in " + *daemon.config_file;
  }
  if (daemon.config_file) {
    return "run keywayctl with the daemon's configuration: keywayctl --config " + *daemon.config_file + " ...";
  }
  return "keywayd runs on its embedded default (no --config); give keywayctl a configuration with "
         "state_dir: " +
         daemon.state_dir + " (and give keywayd the same file)";
}

std::string formatDuration(int64_t seconds) {
  if (seconds < 0) seconds = 0;
  const int64_t d = seconds / 86400, h = seconds % 86400 / 3600, m = seconds % 3600 / 60, s = seconds % 60;
  if (d > 0) return std::to_string(d) + "d " + std::to_string(h) + "h";
  if (h > 0) return std::to_string(h) + "h " + std::to_string(m) + "m";
  if (m > 0) return std::to_string(m) + "m " + std::to_string(s) + "s";
  return std::to_string(s) + "s";
}

std::optional<std::string> checkDaemonAddressOption(const Args& args) {
  auto it = args.options.find("--address");
  if (it == args.options.end()) return std::nullopt;
  auto parsed = core::parseListenAddress(it->second);
  if (!parsed) return "--address: " + parsed.error().message;
  if (parsed->port == 0) return "--address: the port must not be 0";
  return std::nullopt;
}

namespace {

std::string describeConfig(const std::optional<std::string>& file) {
  return file ? *file : std::string("the embedded default");
}

void writeString(Writer& w, const std::string& s) { w.String(s.data(), static_cast<rapidjson::SizeType>(s.size())); }

void printJson(Context& c, const LocalStore& local, const DaemonAnswer& daemon, std::optional<bool> same) {
  rapidjson::StringBuffer buffer;
  Writer w(buffer);
  w.StartObject();
  w.Key("address");
  if (daemon.address.empty()) {
    w.Null();
  } else {
    writeString(w, daemon.address);
  }
  w.Key("running");
  w.Bool(daemon.reach == Reach::kAnswered);
  w.Key("same_store");
  if (same) {
    w.Bool(*same);
  } else {
    w.Null();
  }
  w.Key("problem");
  if (daemon.reach == Reach::kAnswered) {
    w.Null();
  } else {
    writeString(w, daemon.problem);
  }
  w.Key("keywayctl");
  w.StartObject();
  w.Key("config_file");
  if (local.config_file) {
    writeString(w, *local.config_file);
  } else {
    w.Null();
  }
  w.Key("state_dir");
  writeString(w, local.state_dir);
  w.Key("master_key_file");
  writeString(w, local.master_key_file);
  w.Key("credential_store");
  w.StartObject();
  w.Key("path");
  writeString(w, local.store.path);
  w.Key("exists");
  w.Bool(local.exists);
  w.Key("device");
  w.Uint64(local.store.device);
  w.Key("inode");
  w.Uint64(local.store.inode);
  w.Key("generation");
  if (local.generation) {
    w.Uint64(*local.generation);
  } else {
    w.Null();
  }
  w.Key("problem");
  if (local.problem.empty()) {
    w.Null();
  } else {
    writeString(w, local.problem);
  }
  w.EndObject();
  w.EndObject();
  w.Key("daemon");
  if (daemon.reach == Reach::kAnswered) {
    daemon.doc.Accept(w);
  } else {
    w.Null();
  }
  w.EndObject();
  c.out << buffer.GetString() << "\n";
}

void printLocal(Context& c, const LocalStore& local) {
  c.out << "this keywayctl:\n";
  std::vector<std::vector<std::string>> rows = {
      {"  config file", describeConfig(local.config_file)},
      {"  state dir", local.state_dir},
      {"  credential store", local.store.path + (local.generation ? ", generation " + std::to_string(*local.generation)
                                                                  : std::string(local.exists ? "" : " (absent)"))},
  };
  printTable(c.out, rows);
  if (!local.problem.empty() && local.exists) c.err << "keywayctl: note: " << local.problem << "\n";
}

void printDaemon(Context& c, const DaemonAnswer& a) {
  const rapidjson::Value& d = a.doc;
  c.out << "keywayd " << jsonString(d, "version") << " answers at " << a.address << ": pid "
        << jsonInt(d, "pid").value_or(0) << ", up " << formatDuration(jsonInt(d, "uptime_seconds").value_or(0))
        << (jsonBool(d, "draining") ? ", draining" : jsonBool(d, "ready") ? ", ready" : ", not ready") << "\n";
  std::vector<std::vector<std::string>> rows = {
      {"  config file", describeConfig(a.config_file)},
      {"  state dir", a.state_dir},
      {"  credential store",
       a.store.path + (a.generation ? ", generation " + std::to_string(*a.generation) : std::string())},
      {"  master key", jsonString(d, "master_key_file")},
  };
  if (const rapidjson::Value* cache = jsonMember(d, "cache")) {
    std::string line = "disabled";
    if (jsonBool(*cache, "enabled")) {
      line = jsonString(*cache, "path") + ": " + (jsonBool(*cache, "healthy") ? "healthy" : "DEGRADED") + ", " +
             std::to_string(jsonInt(*cache, "entries").value_or(0)) + " entries, " +
             formatBytes(static_cast<uint64_t>(jsonInt(*cache, "bytes").value_or(0))) + ", generation " +
             std::to_string(jsonInt(*cache, "generation").value_or(0));
    }
    rows.push_back({"  cache", line});
  }
  if (const rapidjson::Value* listeners = jsonMember(d, "listeners"); listeners && listeners->IsArray()) {
    for (const auto& l : listeners->GetArray()) {
      const std::string upstream = jsonString(l, "upstream");
      rows.push_back({"  listener", jsonString(l, "address") + " (" + jsonString(l, "name") +
                                        (upstream.empty() ? "" : " for " + upstream) + ")"});
    }
  }
  printTable(c.out, rows);
  const rapidjson::Value* upstreams = jsonMember(d, "upstreams");
  if (upstreams == nullptr || !upstreams->IsArray() || upstreams->Empty()) return;
  std::vector<std::vector<std::string>> table = {{"UPSTREAM", "ORIGIN", "CONNECTIONS", "LAST ANSWER", "LAST FAILURE"}};
  std::vector<std::string> failures;
  for (const auto& u : upstreams->GetArray()) {
    const std::string name = jsonString(u, "name");
    std::string answer = jsonString(u, "last_answer_at");
    if (answer.empty()) answer = "-";
    if (auto s = jsonInt(u, "last_status")) answer += " (" + std::to_string(*s) + ")";
    std::string failure = jsonString(u, "last_failure_at");
    if (!failure.empty()) failures.push_back(name + " at " + failure + ": " + jsonString(u, "last_failure"));
    table.push_back({name, jsonString(u, "origin"), std::to_string(jsonInt(u, "connections_open").value_or(0)),
                     answer, failure.empty() ? "-" : failure});
  }
  c.out << "\n";
  printTable(c.out, table);
  if (!failures.empty()) {
    c.out << "\nlast failures:\n";
    for (const auto& f : failures) c.out << "  " << f << "\n";
  }
}

int cmdStatus(Context& c) {
  const LocalStore local = describeLocalStore(c);
  const DaemonAnswer daemon = askDaemon(c);
  const bool json = c.flag("--json");
  std::optional<bool> same;
  if (daemon.reach == Reach::kAnswered) same = sameStore(daemon.store, local.store);
  if (json) printJson(c, local, daemon, same);

  switch (daemon.reach) {
    case Reach::kNoAddress:
      return c.fail(daemon.problem, kCtlExitUsage);
    case Reach::kNotRunning:
      if (!json) printLocal(c, local);
      return c.fail(daemon.problem + "; start it (systemctl start keyway, or keywayd --config FILE), or pass "
                                     "--address HOST:PORT if it listens elsewhere",
                    kStatusExitNotRunning);
    case Reach::kFailed:
      return c.fail(daemon.problem, kCtlExitFailure);
    case Reach::kAnswered:
      break;
  }
  if (!json) printDaemon(c, daemon);
  if (!*same) {
    if (!json) {
      c.out << "\n";
      printLocal(c, local);
    }
    c.err << "keywayctl: WARNING: keywayd reads ANOTHER credential store than this keywayctl edits:\n"
          << "keywayctl:   keywayd:    " << daemon.store.path << " (config: " << describeConfig(daemon.config_file)
          << ")\n"
          << "keywayctl:   keywayctl:  " << local.store.path << " (config: " << describeConfig(local.config_file)
          << ")\n"
          << "keywayctl: what this keywayctl changes never reaches the running daemon; "
          << otherStoreHint(daemon, local) << "\n";
    return kStatusExitOtherStore;
  }
  if (!json) {
    c.out << "\nsame store: this keywayctl (config: " << describeConfig(local.config_file) << ") edits "
          << local.store.path << ", which keywayd reads\n";
  }
  return kCtlExitOk;
}

}  // namespace

const CommandGroup& statusGroup() {
  static const CommandGroup group = {
      "status",
      "usage: keywayctl status [--json] [--address HOST:PORT]\n"
      "\n"
      "Asks the running keywayd (GET /_keyway/status on its main listener: the configuration's\n"
      "`listen`, or --address) what it serves from where: version, pid, uptime, config file,\n"
      "state directory, credential store and its generation, cache, listeners and each upstream's\n"
      "origin, open connections, last answer and last failure. Then says whether keywayd reads the\n"
      "credential store this keywayctl edits (same directory, compared by device and inode).\n"
      "Never shows a secret.\n"
      "\n"
      "options:\n"
      "  --json               one JSON object on stdout: address, running, same_store, problem,\n"
      "                       keywayctl {config_file, state_dir, credential_store}, daemon {...}\n"
      "  --address HOST:PORT  where keywayd listens (default: the configuration's listen)\n"
      "\n"
      "exit status: 0 keywayd answers and reads this store; 1 bad usage, or keywayd reads another\n"
      "credential store; 2 no keywayd answers (not running), or no usable answer\n",
      {
          {"", 0, 0, {"--address"}, {"--json"}, {}, "keywayctl status [--json] [--address HOST:PORT]", Store::kNone,
           Input::kNone, cmdStatus, checkDaemonAddressOption},
      }};
  return group;
}

}  // namespace keyway::daemon::ctl

// keywayd's status document (daemon/status_report) and the judgements behind `keywayctl status`
// and `keywayctl doctor` (daemon/ctl/status.hpp, doctor.hpp) that need no network: store
// identity, the daemon's address, file modes, probe plans and verdicts, exit codes.
#include <doctest/doctest.h>
#include <rapidjson/document.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.hpp"
#include "core/gateway.hpp"
#include "daemon/ctl/doctor.hpp"
#include "daemon/ctl/status.hpp"
#include "daemon/status_report.hpp"
#include "storage/memory_cache_store.hpp"
#include "storage/memory_credential_store.hpp"
#include "tests/unit/core/gateway_fakes.hpp"
#include "tests/unit/storage/test_util.hpp"

namespace keyway::daemon {
namespace {

using ctl::CheckResult;

core::UpstreamConfig upstream(const std::string& name, core::Protocol protocol, const std::string& base_url) {
  core::UpstreamConfig u;
  u.name = name;
  u.protocol = protocol;
  u.base_url = base_url;
  u.credential = core::defaultCredentialFor(protocol);
  return u;
}

}  // namespace

TEST_CASE("status report: what the daemon serves from where, without a secret") {
  auto config = std::make_shared<core::Config>();
  config->upstreams.push_back(upstream("bundleup-api", core::Protocol::kBundleUp, "https://api.example:8443/v1/tok-in-path"));
  config->upstreams.push_back(upstream("bundleiq", core::Protocol::kBundleIq, "http://127.0.0.1:9"));
  auto store = std::make_shared<storage::MemoryCredentialStore>();
  const std::string secret = "status-secret-0123456789";
  REQUIRE(store->setSecret("bundleup.api_key", "", core::SecretString(secret)).ok());
  REQUIRE(store->addTeam(core::TeamRecord{"t1", true, {}, 0}).ok());
  auto token = store->addClient("c1", "t1");
  REQUIRE(token.ok());
  // Positive control: the secret is in the store the report reads.
  auto resolved = store->resolveSecret("bundleup.api_key", "t1");
  REQUIRE(resolved.ok());
  REQUIRE(resolved->has_value());
  CHECK((*resolved)->value.view() == secret);

  auto metrics = std::make_shared<core::Metrics>(std::vector<std::string>{"bundleup-api", "bundleiq"});
  auto cache = std::make_shared<storage::MemoryCacheStore>(storage::MemoryCacheStoreOptions{});
  core::GatewayDeps deps{store, std::make_shared<core::testing::FakeUpstream>(), metrics,
                         std::make_shared<core::testing::NullEvents>(), nullptr, cache, nullptr, nullptr, nullptr, nullptr};
  auto gateway = std::make_shared<core::Gateway>(config, deps);
  metrics->upstreamByName("bundleiq")->health.noteFailure(core::UpstreamErrorKind::kConnect, 1'700'000'000'000, [] { return std::string("refused"); });
  metrics->upstreamByName("bundleup-api")->health.noteAnswer(204, 1'700'000'001'000);

  StatusPaths paths;
  paths.config_file = "/etc/keyway/keyway.yaml";
  paths.state_dir = "/var/lib/keyway";
  paths.master_key_file = "/var/lib/keyway/master.key";
  paths.credential_store = "/var/lib/keyway/credentials";
  paths.device = 7;
  paths.inode = 42;
  paths.cache_dir = "/var/lib/keyway/cache";
  StatusReport report(paths);

  // Before start-up completes: no sources, no listeners, not ready, still a valid document.
  {
    rapidjson::Document doc;
    doc.Parse(report.render().c_str());
    REQUIRE(doc.IsObject());
    CHECK_FALSE(doc["ready"].GetBool());
    CHECK(doc["listeners"].Empty());
    CHECK(doc["upstreams"].Empty());
  }

  bool ready = true;
  report.setSources({gateway, store, cache, metrics, {}, [&ready] { return ready; }});
  report.setListeners({{"main", "", "127.0.0.1:8750"}, {"compat", "bundleup-api", "127.0.0.1:8751"}});
  const std::string text = report.render();
  rapidjson::Document doc;
  doc.Parse(text.c_str());
  REQUIRE(doc.IsObject());
  CHECK(std::string(doc["version"].GetString()) == KEYWAY_VERSION);
  CHECK(doc["pid"].GetInt64() == static_cast<int64_t>(::getpid()));
  CHECK(doc["ready"].GetBool());
  CHECK_FALSE(doc["draining"].GetBool());
  CHECK(std::string(doc["config_file"].GetString()) == "/etc/keyway/keyway.yaml");
  CHECK(std::string(doc["state_dir"].GetString()) == "/var/lib/keyway");
  CHECK(std::string(doc["credential_store"]["path"].GetString()) == "/var/lib/keyway/credentials");
  CHECK(doc["credential_store"]["device"].GetUint64() == 7);
  CHECK(doc["credential_store"]["inode"].GetUint64() == 42);
  CHECK(doc["credential_store"]["generation"].GetUint64() == store->generation());
  CHECK(doc["cache"]["enabled"].GetBool());
  CHECK(doc["cache"]["healthy"].GetBool());
  CHECK(doc["cache"]["generation"].GetUint64() == 0);
  cache->purge("", "");
  {
    rapidjson::Document again;
    again.Parse(report.render().c_str());
    CHECK(again["cache"]["generation"].GetUint64() == 1);  // a purge moves it
  }
  REQUIRE(doc["listeners"].Size() == 2);
  CHECK(std::string(doc["listeners"][1]["upstream"].GetString()) == "bundleup-api");
  REQUIRE(doc["upstreams"].Size() == 2);
  const auto& api = doc["upstreams"][0];
  CHECK(std::string(api["origin"].GetString()) == "https://api.example:8443");  // no path
  CHECK(std::string(api["credential_secret"].GetString()) == "bundleup.api_key");
  CHECK(api["connections_open"].GetInt64() == 0);
  CHECK(std::string(api["last_answer_at"].GetString()) == "2023-11-14T22:13:21Z");
  CHECK(api["last_status"].GetInt() == 204);
  CHECK(api["last_failure_at"].IsNull());
  const auto& iq = doc["upstreams"][1];
  CHECK(std::string(iq["last_failure_at"].GetString()) == "2023-11-14T22:13:20Z");
  CHECK(std::string(iq["last_failure"].GetString()) == "refused");
  CHECK(std::string(iq["last_failure_class"].GetString()) == "connect");
  CHECK(iq["last_answer_at"].IsNull());
  CHECK(api["last_failure_class"].IsNull());
  REQUIRE(iq["errors"].IsObject());
  CHECK(iq["errors"].MemberCount() == static_cast<size_t>(core::UpstreamErrorKind::kCount));
  CHECK(iq["errors"]["connect"].GetUint64() == 0);  // noteFailure alone counts nothing
  // Nothing secret: no value, no client token, no path of a base URL.
  CHECK(text.find(secret) == std::string::npos);
  CHECK(text.find(std::string(token->view())) == std::string::npos);
  CHECK(text.find("tok-in-path") == std::string::npos);

  gateway->setDraining(true);
  ready = false;
  doc.Parse(report.render().c_str());
  CHECK(doc["draining"].GetBool());
  CHECK_FALSE(doc["ready"].GetBool());
}

TEST_CASE("status report: origins and absolute paths") {
  CHECK(urlOrigin("https://api.bundleup.io") == "https://api.bundleup.io");
  CHECK(urlOrigin("https://api.bundleup.io/v1/x?q=1#f") == "https://api.bundleup.io");
  CHECK(urlOrigin("http://user:pass@127.0.0.1:9/p") == "http://127.0.0.1:9");
  CHECK(urlOrigin("https://[::1]:8443/x") == "https://[::1]:8443");
  CHECK(urlOrigin("no-scheme") == "");
  keyway::testing::TempDir dir;
  REQUIRE(::mkdir((dir / "real").c_str(), 0700) == 0);
  REQUIRE(::symlink((dir / "real").c_str(), (dir / "link").c_str()) == 0);
  const std::string real = absolutePath(dir / "real");
  CHECK(absolutePath(dir / "link") == real);  // symlinks resolved
  CHECK(absolutePath(dir / "missing") == dir / "missing");
  char cwd[4096];
  REQUIRE(::getcwd(cwd, sizeof cwd) != nullptr);
  CHECK(absolutePath("./no-such-keyway-state") == std::string(cwd) + "/no-such-keyway-state");
}

TEST_CASE("keywayctl status: the same store is the same directory, whatever the path") {
  using ctl::StoreIdentity;
  CHECK(ctl::sameStore(StoreIdentity{"/a/credentials", 1, 2}, StoreIdentity{"/b/credentials", 1, 2}));
  CHECK_FALSE(ctl::sameStore(StoreIdentity{"/a/credentials", 1, 2}, StoreIdentity{"/a/credentials", 1, 3}));
  CHECK_FALSE(ctl::sameStore(StoreIdentity{"/a/credentials", 1, 2}, StoreIdentity{"/a/credentials", 9, 2}));
  // A side that has no identity (its store does not exist): paths decide.
  CHECK(ctl::sameStore(StoreIdentity{"/a/credentials", 1, 2}, StoreIdentity{"/a/credentials", 0, 0}));
  CHECK_FALSE(ctl::sameStore(StoreIdentity{"/a/credentials", 1, 2}, StoreIdentity{"/b/credentials", 0, 0}));
}

TEST_CASE("keywayctl status: the next step when keywayd reads another store") {
  ctl::DaemonAnswer daemon;
  daemon.state_dir = "/var/lib/keyway";
  daemon.config_file = "/etc/keyway/keyway.yaml";
  ctl::LocalStore local;
  local.config_file = "/home/op/keyway.yaml";
  // Another file: use the daemon's.
  CHECK(ctl::otherStoreHint(daemon, local) ==
        "run keywayctl with the daemon's configuration: keywayctl --config /etc/keyway/keyway.yaml ...");
  // The same file (state_dir "" resolved from the environment): say which directory to give.
  local.config_file = "/etc/keyway/keyway.yaml";
  const std::string same = ctl::otherStoreHint(daemon, local);
  CHECK(same.find("STATE_DIRECTORY=/var/lib/keyway") != std::string::npos);
  CHECK(same.find("state_dir: /var/lib/keyway in /etc/keyway/keyway.yaml") != std::string::npos);
  // keywayd on its embedded default: name the directory to configure.
  daemon.config_file.reset();
  CHECK(ctl::otherStoreHint(daemon, local).find("state_dir: /var/lib/keyway") != std::string::npos);
}

TEST_CASE("keywayctl status: where keywayd is asked") {
  core::ListenAddress listen{"127.0.0.1", 8750};
  CHECK(ctl::daemonAddress(listen) == "127.0.0.1:8750");
  CHECK(ctl::daemonAddress({"0.0.0.0", 8750}) == "127.0.0.1:8750");
  CHECK(ctl::daemonAddress({"::", 8750}) == "[::1]:8750");
  CHECK(ctl::daemonAddress({"::1", 1}) == "[::1]:1");
  CHECK(ctl::daemonAddress({"localhost", 80}) == "localhost:80");
  CHECK_FALSE(ctl::daemonAddress({"127.0.0.1", 0}).has_value());

  ctl::Args args;
  CHECK_FALSE(ctl::checkDaemonAddressOption(args).has_value());
  args.options["--address"] = "127.0.0.1:8750";
  CHECK_FALSE(ctl::checkDaemonAddressOption(args).has_value());
  for (const char* bad : {"127.0.0.1", "127.0.0.1:0", "http://127.0.0.1:1", "a b:1", "127.0.0.1:99999"}) {
    CAPTURE(bad);
    args.options["--address"] = bad;
    CHECK(ctl::checkDaemonAddressOption(args).has_value());
  }
}

TEST_CASE("keywayctl status: durations") {
  CHECK(ctl::formatDuration(0) == "0s");
  CHECK(ctl::formatDuration(59) == "59s");
  CHECK(ctl::formatDuration(61) == "1m 1s");
  CHECK(ctl::formatDuration(3 * 3600 + 12 * 60 + 5) == "3h 12m");
  CHECK(ctl::formatDuration(2 * 86400 + 3600) == "2d 1h");
  CHECK(ctl::formatDuration(-5) == "0s");
}

TEST_CASE("keywayctl doctor: file modes") {
  CHECK(ctl::judgeKeyMode(0600) == CheckResult::kOk);
  CHECK(ctl::judgeKeyMode(0400) == CheckResult::kOk);
  CHECK(ctl::judgeKeyMode(0700) == CheckResult::kWarn);
  CHECK(ctl::judgeKeyMode(0200) == CheckResult::kWarn);
  CHECK(ctl::judgeKeyMode(0640) == CheckResult::kFail);
  CHECK(ctl::judgeKeyMode(0604) == CheckResult::kFail);
  CHECK(ctl::judgeKeyMode(0610) == CheckResult::kFail);
  CHECK(ctl::judgeStateDirMode(S_IFDIR | 0700) == CheckResult::kOk);
  CHECK(ctl::judgeStateDirMode(S_IFDIR | 0750) == CheckResult::kWarn);
  CHECK(ctl::judgeStateDirMode(S_IFDIR | 0701) == CheckResult::kWarn);
  CHECK(ctl::judgeStateDirMode(S_IFDIR | 0770) == CheckResult::kFail);
  CHECK(ctl::judgeStateDirMode(S_IFDIR | 0777) == CheckResult::kFail);
}

TEST_CASE("keywayctl doctor: the harmless request per protocol") {
  auto plan = ctl::probePlanFor(upstream("bundleup-api", core::Protocol::kBundleUp, "https://a"));
  CHECK(plan.target == "/v1/integrations?limit=1");
  CHECK(plan.send_key);
  plan = ctl::probePlanFor(upstream("bundleiq", core::Protocol::kBundleIq, "https://a"));
  CHECK(plan.target == "/v1/workspaces");
  CHECK(plan.send_key);
  plan = ctl::probePlanFor(upstream("bosa", core::Protocol::kBosa, "https://a"));
  CHECK(plan.target == "/connectors/names");
  CHECK_FALSE(plan.send_key);
  plan = ctl::probePlanFor(upstream("mine", core::Protocol::kGeneric, "https://a"));
  CHECK(plan.target.empty());
  CHECK_FALSE(plan.send_key);
  // A BundleUp upstream configured to inject nothing has no key to try: connect only.
  auto keyless = upstream("bundleup-x", core::Protocol::kBundleUp, "https://a");
  keyless.credential.secret.clear();
  plan = ctl::probePlanFor(keyless);
  CHECK(plan.target.empty());
}

TEST_CASE("keywayctl doctor: what a probe's answer means") {
  CHECK(ctl::judgeProbeAnswer(200, true).result == CheckResult::kOk);
  CHECK(ctl::judgeProbeAnswer(200, true).message.find("accepted") != std::string::npos);
  CHECK(ctl::judgeProbeAnswer(401, true).result == CheckResult::kFail);
  CHECK(ctl::judgeProbeAnswer(403, true).result == CheckResult::kFail);
  CHECK(ctl::judgeProbeAnswer(401, false).result == CheckResult::kWarn);
  CHECK(ctl::judgeProbeAnswer(429, true).result == CheckResult::kWarn);
  CHECK(ctl::judgeProbeAnswer(502, true).result == CheckResult::kWarn);
  CHECK(ctl::judgeProbeAnswer(400, true).result == CheckResult::kOk);  // e.g. no connection id on the proxy
  CHECK(ctl::judgeProbeAnswer(404, true).message.find("not refused") != std::string::npos);
}

TEST_CASE("keywayctl doctor: exit code and team access") {
  using ctl::Check;
  CHECK(ctl::doctorExitCode({}) == 0);
  CHECK(ctl::doctorExitCode({Check{"a", "", "", CheckResult::kOk, "", ""}, Check{"b", "", "", CheckResult::kSkip, "", ""}}) == 0);
  CHECK(ctl::doctorExitCode({Check{"a", "", "", CheckResult::kWarn, "", ""}, Check{"b", "", "", CheckResult::kOk, "", ""}}) == 0);
  CHECK(ctl::doctorExitCode({Check{"a", "", "", CheckResult::kFail, "", ""}, Check{"b", "", "", CheckResult::kWarn, "", ""}}) == 1);
  CHECK(ctl::doctorExitCode({Check{"a", "", "", CheckResult::kWarn, "", ""}, Check{"b", "", "", CheckResult::kFail, "", ""}}) == 1);
  CHECK(ctl::teamUses(core::TeamRecord{"t", true, {}, 0}, "bosa"));
  CHECK(ctl::teamUses(core::TeamRecord{"t", false, {"bosa", "bundleiq"}, 0}, "bundleiq"));
  CHECK_FALSE(ctl::teamUses(core::TeamRecord{"t", false, {"bosa"}, 0}, "bundleiq"));
}

}  // namespace keyway::daemon

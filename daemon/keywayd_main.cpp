// keywayd: the gateway daemon's command line (docs/cli.md); the process is daemon/daemon.hpp.
#include <pthread.h>
#include <signal.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "core/config_parse.hpp"
#include "daemon/daemon.hpp"
#include "daemon/log.hpp"
#include "daemon/yaml_config_loader.hpp"

namespace {

using namespace keyway;

constexpr const char* kUsage =
    "usage: keywayd [--config FILE] [--check-config] [--version]\n"
    "  --config FILE    configuration file (default: the embedded default, equal to conf/keyway.yaml)\n"
    "  --check-config   validate the configuration, print the result and any warnings, exit 0\n"
    "                   (valid) or 1 (invalid)\n"
    "  --version        print the version\n"
    "exit status: 0 stopped (SIGTERM/SIGINT) or done, 1 bad usage or configuration, 2 start-up or\n"
    "runtime failure (a port in use, the credential store unreadable)\n";

struct Args {
  std::optional<std::string> config;
  bool check = false;
};

int parseArgs(int argc, char** argv, Args& args) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--config" || a == "-c") {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "keywayd: --config needs a file name\n%s", kUsage);
        return daemon::kExitUsageOrConfig;
      }
      args.config = argv[++i];
    } else if (a.rfind("--config=", 0) == 0) {
      args.config = a.substr(9);
    } else if (a == "--check-config") {
      args.check = true;
    } else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--version") {
      std::puts("keywayd " KEYWAY_VERSION);
      return 0;
    } else {
      std::fprintf(stderr, "keywayd: unknown argument '%s'\n%s", a.c_str(), kUsage);
      return daemon::kExitUsageOrConfig;
    }
  }
  return -1;
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  if (int rc = parseArgs(argc, argv, args); rc >= 0) return rc;

  auto config = daemon::loadConfig(args.config);
  if (args.check) {
    if (!config.ok()) {
      std::fprintf(stderr, "keywayd: invalid configuration: %s\n", config.error().message.c_str());
      return daemon::kExitUsageOrConfig;
    }
    // Valid but probably not meant: said, not refused (a firewall may make it right).
    for (const auto& warning : core::configWarnings(*config)) {
      std::fprintf(stderr, "keywayd: warning: %s\n", warning.c_str());
    }
    std::printf("configuration OK: %s (%zu upstreams, listen %s)\n",
                args.config ? args.config->c_str() : "embedded default", config->upstreams.size(),
                config->listen.toString().c_str());
    return 0;
  }
  auto logger = std::make_shared<daemon::Logger>(2);
  if (!config.ok()) {
    logger->error("invalid configuration", {daemon::field("error", config.error().message)});
    return daemon::kExitUsageOrConfig;
  }
  if (auto level = daemon::parseLogLevel(config->log.level)) logger->setLevel(*level);
  logger->setAccessLog(config->log.access_log);
  for (const auto& warning : core::configWarnings(*config)) {
    logger->warn("configuration warning", {daemon::field("warning", warning)});
  }

  // Broken client sockets must surface as write errors, not kill the process.
  signal(SIGPIPE, SIG_IGN);
  // Block the signals we handle before any thread exists, so every thread inherits the mask and
  // only the main thread's sigtimedwait sees them.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  try {
    daemon::Daemon d(args.config, std::move(config.value()), logger);
    return d.run();
  } catch (const std::exception& e) {
    logger->error("fatal error", {daemon::field("error", e.what())});
    return daemon::kExitRuntime;
  }
}

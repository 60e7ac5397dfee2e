#!/bin/bash
# scripts/lib.sh: what scripts/run and scripts/test share: the Debian 12 packages keyway needs,
# installing those that are missing, configuring and building a meson tree. Sourced, not run;
# the sourcing script defines say() and die() first.

# To build keyway; keep in step with the dependency() calls in meson.build (libssl-dev: openssl;
# libre2-dev: re2; systemd: systemd.pc, where the unit is installed; ca-certificates: HTTPS
# upstreams in real use; libhiredis-dev: hiredis 0.14, the client of the shared Redis cache).
KEYWAY_BUILD_PACKAGES=(meson ninja-build pkg-config g++ libpistache-dev libcurl4-openssl-dev libssl-dev
                       rapidjson-dev liblmdb-dev libyaml-cpp-dev doctest-dev libsodium-dev libsystemd-dev
                       libre2-dev systemd ca-certificates libhiredis-dev)
# Only to test it: json-schema-test-suite (the validator's conformance cases); python3 (the
# integration tests, stdlib only); procps (/bin/kill, which the unit's ExecReload names and the
# install check runs); openssl (its CLI makes the tests' PKI, tests/fakes/tls_ca.py); nginx (the
# real HTTP/2 TLS upstream test_tls.py starts; its `return` directive answers, so no echo module);
# etcd-server and etcd-client (the real 3-member etcd cluster of the fleet tests,
# tests/integration/etcd_cluster.py; the policy-rc.d below keeps the package's own etcd service from
# starting on port 2379); redis-server (the real Redis of the shared-cache tests,
# tests/integration/redis_server.py, on a free port; the same policy-rc.d keeps the package's own
# service off port 6379).
# The sanitizer runtimes (libasan8, libubsan1, libtsan2) come with g++ through libgcc-12-dev.
KEYWAY_TEST_PACKAGES=(json-schema-test-suite python3 procps openssl nginx etcd-server etcd-client redis-server)

# keyway_install_missing PACKAGE...: installs those not installed (apt-get, as root or via sudo).
keyway_install_missing() {
  local missing=() p
  if ! command -v dpkg-query >/dev/null 2>&1; then
    say "not a Debian system (no dpkg-query): assuming the build dependencies are installed"
    return 0
  fi
  for p in "$@"; do
    if [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) != installed ]]; then
      missing+=("$p")
    fi
  done
  ((${#missing[@]} == 0)) && return 0
  if [[ ${KEYWAY_NO_INSTALL:-} == 1 ]]; then
    die "missing Debian packages: ${missing[*]} (KEYWAY_NO_INSTALL=1: not installing)"
  fi
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "missing Debian packages: ${missing[*]}; run as root: apt-get install ${missing[*]}"
    sudo=(sudo)
  fi
  say "installing missing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Debian's nginx, etcd-server and redis-server packages start their own services (ports 80, 2379
  # and 6379) when installed; a policy-rc.d that denies service starts (the Debian mechanism for
  # this) keeps the machine as it was.
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee /usr/sbin/policy-rc.d >/dev/null \
      && "${sudo[@]}" chmod 755 /usr/sbin/policy-rc.d && made_policy=1
  fi
  local rc=0
  { "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" \
      >/dev/null; } || rc=$?
  if ((made_policy)); then "${sudo[@]}" rm -f /usr/sbin/policy-rc.d; fi
  ((rc == 0)) || die "apt-get install ${missing[*]} failed"
}

# keyway_configure DIR [meson setup options...]: once; later runs let ninja re-run meson itself.
keyway_configure() {
  local dir=$1
  shift
  if [[ -f $dir/build.ninja && -f $dir/meson-private/coredata.dat ]]; then
    return 0
  fi
  say "configuring $dir"
  # shellcheck disable=SC2086  # KEYWAY_MESON_OPTS is a list of options on purpose
  meson setup "$dir" "$@" ${KEYWAY_MESON_OPTS:-} >/dev/null || {
    tail -n 30 "$dir/meson-logs/meson-log.txt" >&2 2>/dev/null || true
    die "meson setup of $dir failed"
  }
}

# keyway_build DIR [targets...]: the tree's default targets, or only those named (meson compile's
# [PATH/]NAME).
keyway_build() {
  local dir=$1
  shift
  local jobs
  jobs=$(nproc 2>/dev/null || echo 2)
  meson compile -C "$dir" -j "$jobs" "$@" || die "build of $dir failed"
}

// The Redis client against a real redis-server (scripts/test installs it) on a unix socket in a
// temp dir: replies, server errors, a password, a server down, killed, paused and restarted,
// and the subscription across a restart.
#include "daemon/redis_client.hpp"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

#include "tests/unit/storage/test_util.hpp"

namespace keyway::daemon {
namespace {

using namespace std::chrono_literals;
using keyway::testing::TempDir;

// One redis-server process on `socket` with no persistence (a restart starts empty).
class RedisProcess {
 public:
  RedisProcess(std::string dir, std::string password = "") : dir_(std::move(dir)), password_(std::move(password)) {
    {
      std::ofstream conf(dir_ + "/redis.conf");
      conf << "port 0\nunixsocket " << socket() << "\nunixsocketperm 700\nsave \"\"\nappendonly no\n"
           << "dir " << dir_ << "\nlogfile " << dir_ << "/redis.log\n";
      if (!password_.empty()) conf << "requirepass " << password_ << "\n";
    }
    start();
  }
  ~RedisProcess() { kill(); }

  std::string socket() const { return dir_ + "/redis.sock"; }

  void start() {
    pid_ = ::fork();
    if (pid_ == 0) {
      const std::string conf = dir_ + "/redis.conf";
      const int err = ::open((dir_ + "/stderr").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (err >= 0) {
        ::dup2(err, 1);
        ::dup2(err, 2);
      }
      ::execlp("redis-server", "redis-server", conf.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    REQUIRE(pid_ > 0);
    // Ready when the socket accepts a connection.
    for (int i = 0; i < 500; ++i) {
      if (accepts()) return;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) != 0) {
        pid_ = -1;
        FAIL("redis-server exited (scripts/test installs it); its output: "
             << keyway::testing::readFile(dir_ + "/stderr") << keyway::testing::readFile(dir_ + "/redis.log"));
      }
      std::this_thread::sleep_for(10ms);
    }
    kill();  // FAIL throws out of the constructor: the destructor would not stop it
    FAIL("redis-server did not open " << socket());
  }
  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
    ::unlink(socket().c_str());
  }
  void pause() { ::kill(pid_, SIGSTOP); }
  void resume() { ::kill(pid_, SIGCONT); }

 private:
  bool accepts() const {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    const std::string path = socket();
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    return ok;
  }

  std::string dir_;
  std::string password_;
  pid_t pid_ = -1;
};

RedisResult call(RedisClient& client, std::vector<std::string> argv) {
  auto done = std::make_shared<std::promise<RedisResult>>();
  auto result = done->get_future();
  client.command(std::move(argv), [done](RedisResult r) { done->set_value(std::move(r)); });
  REQUIRE(result.wait_for(5s) == std::future_status::ready);  // every command ends, whatever Redis does
  return result.get();
}

// Calls until a command succeeds (a reconnect after a restart), or fails the test after `limit`.
RedisResult callUntilOk(RedisClient& client, std::vector<std::string> argv, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  for (;;) {
    RedisResult r = call(client, argv);
    if (r.ok() || std::chrono::steady_clock::now() > end) return r;
    std::this_thread::sleep_for(20ms);
  }
}

std::unique_ptr<RedisClient> client(const std::string& address, std::chrono::milliseconds timeout = 200ms,
                                    std::optional<core::SecretString> password = std::nullopt) {
  RedisClientOptions o;
  o.address = address;
  o.timeout = timeout;
  o.password = std::move(password);
  auto c = RedisClient::start(std::move(o));
  REQUIRE(c.ok());
  return std::move(c).value();
}

TEST_CASE("redis address: host:port, [v6]:port and unix paths; the rest refused") {
  CHECK(parseRedisAddress("127.0.0.1:6379").value() == std::pair<std::string, int>{"127.0.0.1", 6379});
  CHECK(parseRedisAddress("[::1]:6380").value() == std::pair<std::string, int>{"::1", 6380});
  CHECK(parseRedisAddress("/run/redis/redis.sock").value() == std::pair<std::string, int>{"/run/redis/redis.sock", 0});
  for (const char* bad : {"", "localhost", "::1:6379", "host:0", "host:70000", "host:12ab", ":6379", "[::1]6379"}) {
    CHECK_MESSAGE(!parseRedisAddress(bad).ok(), bad);
  }
}

TEST_CASE("redis client: replies of every type and server errors, over a unix socket") {
  TempDir dir;
  RedisProcess server(dir.path());
  auto c = client(server.socket());
  auto set = callUntilOk(*c, {"SET", "k", std::string("v\0w", 3)}, 3s);
  REQUIRE(set.ok());
  CHECK(set.reply.type == RedisReply::Type::kStatus);
  CHECK(set.reply.str == "OK");
  auto get = call(*c, {"GET", "k"});
  CHECK(get.reply.type == RedisReply::Type::kString);
  CHECK(get.reply.str == std::string("v\0w", 3));  // binary-safe
  CHECK(call(*c, {"GET", "absent"}).reply.type == RedisReply::Type::kNil);
  auto incr = call(*c, {"INCR", "n"});
  CHECK(incr.reply.type == RedisReply::Type::kInteger);
  CHECK(incr.reply.integer == 1);
  auto mget = call(*c, {"MGET", "k", "absent", "n"});
  REQUIRE(mget.reply.type == RedisReply::Type::kArray);
  REQUIRE(mget.reply.elements.size() == 3);
  CHECK(mget.reply.elements[1].type == RedisReply::Type::kNil);
  CHECK(mget.reply.elements[2].str == "1");
  auto wrong = call(*c, {"LPUSH", "k", "x"});
  CHECK(wrong.failure == RedisFailure::kServerError);
  CHECK(wrong.message.find("WRONGTYPE") != std::string::npos);
  // Many at once on the pipelined connections, each answered in its own callback.
  std::vector<std::future<RedisResult>> many;
  for (int i = 0; i < 200; ++i) {
    auto p = std::make_shared<std::promise<RedisResult>>();
    many.push_back(p->get_future());
    c->command({"INCR", "many"}, [p](RedisResult r) { p->set_value(std::move(r)); });
  }
  int64_t max = 0;
  for (auto& f : many) {
    REQUIRE(f.wait_for(5s) == std::future_status::ready);
    max = std::max(max, f.get().reply.integer);
  }
  CHECK(max == 200);
  CHECK(c->stats().commands >= 206);
  CHECK(c->stats().connections_up == 2);
}

TEST_CASE("redis client: a password from the options; without it every command is refused") {
  TempDir dir;
  RedisProcess server(dir.path(), "s3cret-pass");
  auto good = client(server.socket(), 200ms, core::SecretString(std::string("s3cret-pass")));
  CHECK(callUntilOk(*good, {"SET", "a", "1"}, 3s).ok());
  auto none = client(server.socket());
  auto refused = callUntilOk(*none, {"GET", "a"}, 300ms);
  CHECK(refused.failure == RedisFailure::kServerError);
  CHECK(refused.message.find("NOAUTH") != std::string::npos);
}

TEST_CASE("redis client: down, killed, restarted: unavailable at once, then back on its own") {
  TempDir dir;
  const std::string sock = dir / "redis.sock";
  auto c = client(sock);
  auto down = call(*c, {"PING"});
  CHECK(down.failure == RedisFailure::kUnavailable);
  {
    RedisProcess server(dir.path());
    CHECK(callUntilOk(*c, {"PING"}, 5s).ok());
    server.kill();
    const auto t0 = std::chrono::steady_clock::now();
    auto lost = call(*c, {"PING"});
    CHECK_FALSE(lost.ok());
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
    server.start();
    auto back = callUntilOk(*c, {"PING"}, 10s);
    CHECK(back.ok());
    CHECK(back.reply.str == "PONG");
    // The command may have gone through a connection that was not up yet before the kill: wait for
    // one that was to come back.
    const auto until = std::chrono::steady_clock::now() + 5s;
    while (c->stats().reconnects == 0 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
    CHECK(c->stats().reconnects >= 1);
  }
  CHECK(c->stats().unavailable >= 1);
  CHECK_FALSE(c->stats().last_error.empty());
}

TEST_CASE("redis client: a paused server costs a timeout, then nothing, and is used again once it answers") {
  TempDir dir;
  RedisProcess server(dir.path());
  auto c = client(server.socket(), 50ms);
  REQUIRE(callUntilOk(*c, {"PING"}, 3s).ok());
  server.pause();
  const auto t0 = std::chrono::steady_clock::now();
  auto slow = call(*c, {"PING"});
  const auto took = std::chrono::steady_clock::now() - t0;
  CHECK(slow.failure == RedisFailure::kTimeout);
  CHECK(took >= 45ms);
  CHECK(took < 1s);
  call(*c, {"PING"});
  call(*c, {"PING"});
  // Three failures in a row: Redis is skipped for a while, commands end at once.
  const auto t1 = std::chrono::steady_clock::now();
  auto skipped = call(*c, {"PING"});
  CHECK(skipped.failure == RedisFailure::kUnavailable);
  CHECK(std::chrono::steady_clock::now() - t1 < 40ms);
  CHECK(c->stats().timeouts >= 3);
  server.resume();
  CHECK(callUntilOk(*c, {"PING"}, 10s).ok());
}

TEST_CASE("redis client: the subscription gets messages, and says when a restart may have lost some") {
  TempDir dir;
  RedisProcess server(dir.path());
  auto c = client(server.socket());
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> got;
  int gaps = 0;
  c->subscribe("ch", [&](std::string_view m) {
    std::lock_guard<std::mutex> lock(mu);
    got.emplace_back(m);
    cv.notify_all();
  }, [&] {
    std::lock_guard<std::mutex> lock(mu);
    ++gaps;
    cv.notify_all();
  });
  auto waitFor = [&](auto pred) {
    std::unique_lock<std::mutex> lock(mu);
    return cv.wait_for(lock, 10s, pred);
  };
  // PUBLISH until the subscriber is in (its SUBSCRIBE races the first PUBLISH).
  const auto end = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < end) {
    call(*c, {"PUBLISH", "ch", "one"});
    std::unique_lock<std::mutex> lock(mu);
    if (cv.wait_for(lock, 50ms, [&] { return !got.empty(); })) break;
  }
  REQUIRE(waitFor([&] { return !got.empty(); }));
  CHECK(got.front() == "one");
  CHECK(gaps == 0);
  CHECK(c->stats().subscribed);
  server.kill();
  server.start();
  CHECK(waitFor([&] { return gaps == 1; }));
  REQUIRE(callUntilOk(*c, {"PUBLISH", "ch", "two"}, 5s).ok());
  CHECK(waitFor([&] { return got.back() == "two"; }));
}

}  // namespace
}  // namespace keyway::daemon

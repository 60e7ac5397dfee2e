// Test-only fake upstream on raw sockets: see raw_http_server.hpp.
#include "tests/unit/daemon/raw_http_server.hpp"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <optional>

namespace keyway::testing {

Step send(std::string bytes) {
  Step step;
  step.kind = Step::Kind::kSend;
  step.bytes = std::move(bytes);
  return step;
}
Step delay(std::chrono::milliseconds time) {
  Step step;
  step.kind = Step::Kind::kDelay;
  step.time = time;
  return step;
}
Step waitFor(std::function<bool()> condition, std::chrono::milliseconds give_up_after) {
  Step step;
  step.kind = Step::Kind::kWaitFor;
  step.condition = std::move(condition);
  step.time = give_up_after;
  return step;
}
Step closeConnection() {
  Step step;
  step.kind = Step::Kind::kClose;
  return step;
}
Step resetConnection() {
  Step step;
  step.kind = Step::Kind::kReset;
  return step;
}
Step stall() {
  Step step;
  step.kind = Step::Kind::kStall;
  return step;
}

std::string response(int status, std::string_view reason, const core::Headers& headers,
                     std::string_view body) {
  std::string out = "HTTP/1.1 " + std::to_string(status);
  if (!reason.empty()) {
    out += ' ';
    out += reason;
  }
  out += "\r\n";
  for (const auto& header : headers) out += header.name + ": " + header.value + "\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n";
  out += body;
  return out;
}

std::string chunk(std::string_view data) {
  char size[32];
  std::snprintf(size, sizeof size, "%zx\r\n", data.size());
  return std::string(size) + std::string(data) + "\r\n";
}

namespace {

using SteadyClock = std::chrono::steady_clock;

[[noreturn]] void die(const char* what) {
  std::perror(what);
  std::abort();
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Parses one request from the front of `in`; nullopt while incomplete.
std::optional<ReceivedRequest> parseRequest(std::string& in) {
  const size_t end = in.find("\r\n\r\n");
  if (end == std::string::npos) return std::nullopt;
  ReceivedRequest request;
  request.head = in.substr(0, end + 4);
  std::string_view head(request.head);
  size_t line_end = head.find("\r\n");
  const std::string_view request_line = head.substr(0, line_end);
  const size_t sp1 = request_line.find(' ');
  const size_t sp2 = request_line.rfind(' ');
  if (sp1 != std::string_view::npos && sp2 > sp1) {
    request.method = std::string(request_line.substr(0, sp1));
    request.target = std::string(request_line.substr(sp1 + 1, sp2 - sp1 - 1));
    request.version = std::string(request_line.substr(sp2 + 1));
  }
  size_t content_length = 0;
  size_t pos = line_end + 2;
  while (pos < end) {
    line_end = head.find("\r\n", pos);
    const std::string_view line = head.substr(pos, line_end - pos);
    pos = line_end + 2;
    const size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    core::Header header{std::string(line.substr(0, colon)), std::string(trim(line.substr(colon + 1)))};
    if (core::iequals(header.name, "Content-Length")) content_length = std::stoul(header.value);
    request.headers.push_back(std::move(header));
  }
  if (in.size() < end + 4 + content_length) return std::nullopt;
  request.body = in.substr(end + 4, content_length);
  in.erase(0, end + 4 + content_length);
  return request;
}

}  // namespace

struct RawHttpServer::Connection {
  int fd = -1;
  int index = 0;
  std::string in;
  std::string out;
  std::deque<Step> steps;
  std::optional<SteadyClock::time_point> step_started;
  bool scripted = false;  // a script is running (or stalled)
  bool stalled = false;
  bool dead = false;
};

RawHttpServer::RawHttpServer(Handler handler, Script on_accept)
    : handler_(std::move(handler)), on_accept_(std::move(on_accept)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) die("socket");
  const int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) die("bind");
  if (::listen(listen_fd_, 4096) != 0) die("listen");
  socklen_t len = sizeof addr;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  if (::pipe2(wake_pipe_, O_NONBLOCK | O_CLOEXEC) != 0) die("pipe2");
  thread_ = std::thread([this] { run(); });
}

RawHttpServer::~RawHttpServer() {
  stop_ = true;
  const char byte = 'x';
  (void)!::write(wake_pipe_[1], &byte, 1);
  thread_.join();
  ::close(listen_fd_);
  ::close(wake_pipe_[0]);
  ::close(wake_pipe_[1]);
}

std::string RawHttpServer::url(std::string_view target) const {
  return "http://127.0.0.1:" + std::to_string(port_) + std::string(target);
}

std::vector<ReceivedRequest> RawHttpServer::requests() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return requests_;
}

size_t RawHttpServer::requestCount() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return requests_.size();
}

// Runs the connection's steps as far as they can go now; reads the next request when idle.
void RawHttpServer::drive(Connection& c) {
  for (;;) {
    // Flush pending output first: every step runs after what precedes it was sent.
    while (!c.out.empty()) {
      const ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
      if (n > 0) {
        c.out.erase(0, static_cast<size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      c.dead = true;  // peer went away
      return;
    }
    if (c.stalled) return;
    if (c.steps.empty()) {
      c.scripted = false;
      std::optional<ReceivedRequest> request = parseRequest(c.in);
      if (!request) return;
      request->connection = c.index;
      Script script = handler_(*request);
      {
        std::lock_guard<std::mutex> lock(mutex_);
        requests_.push_back(std::move(*request));
      }
      c.steps.assign(script.begin(), script.end());
      c.scripted = true;
      c.step_started.reset();
      continue;
    }
    Step& step = c.steps.front();
    const auto now = SteadyClock::now();
    switch (step.kind) {
      case Step::Kind::kSend:
        c.out += step.bytes;
        break;
      case Step::Kind::kDelay:
        if (!c.step_started) c.step_started = now;
        if (now - *c.step_started < step.time) return;
        break;
      case Step::Kind::kWaitFor:
        if (!c.step_started) c.step_started = now;
        if (!step.condition() && now - *c.step_started < step.time) return;
        break;
      case Step::Kind::kClose:
        ::shutdown(c.fd, SHUT_WR);
        c.dead = true;
        return;
      case Step::Kind::kReset: {
        linger lg{1, 0};
        ::setsockopt(c.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        c.dead = true;
        return;
      }
      case Step::Kind::kStall:
        c.stalled = true;
        return;
    }
    c.steps.pop_front();
    c.step_started.reset();
  }
}

void RawHttpServer::run() {
  std::vector<std::unique_ptr<Connection>> connections;
  std::vector<pollfd> fds;
  char buffer[65536];
  while (!stop_) {
    fds.clear();
    fds.push_back(pollfd{wake_pipe_[0], POLLIN, 0});
    fds.push_back(pollfd{listen_fd_, POLLIN, 0});
    // Sleep until the earliest delay ends; conditions (waitFor) are polled every 2 ms.
    int timeout_ms = 100;
    const auto now = SteadyClock::now();
    for (auto& c : connections) {
      short events = POLLIN;
      if (!c->out.empty()) events |= POLLOUT;
      fds.push_back(pollfd{c->fd, events, 0});
      if (c->steps.empty() || c->stalled || !c->out.empty()) continue;
      const Step& step = c->steps.front();
      int wait = 0;
      if (step.kind == Step::Kind::kWaitFor) {
        wait = 2;
      } else if (step.kind == Step::Kind::kDelay && c->step_started) {
        const auto left = *c->step_started + step.time - now;
        wait = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(left).count());
      }
      timeout_ms = std::max(0, std::min(timeout_ms, wait));
    }
    ::poll(fds.data(), fds.size(), timeout_ms);
    if (fds[1].revents & POLLIN) {
      for (;;) {
        const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) break;
        auto c = std::make_unique<Connection>();
        c->fd = fd;
        c->index = static_cast<int>(accepted_.fetch_add(1));
        if (!on_accept_.empty()) {
          c->steps.assign(on_accept_.begin(), on_accept_.end());
          c->scripted = true;
        }
        connections.push_back(std::move(c));
      }
    }
    for (size_t i = 0; i < connections.size(); ++i) {
      Connection& c = *connections[i];
      const short revents = i + 2 < fds.size() && fds[i + 2].fd == c.fd ? fds[i + 2].revents : 0;
      if (revents & (POLLIN | POLLHUP | POLLERR)) {
        for (;;) {
          const ssize_t n = ::recv(c.fd, buffer, sizeof buffer, 0);
          if (n > 0) {
            c.in.append(buffer, static_cast<size_t>(n));
            continue;
          }
          if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) c.dead = true;  // peer closed
          break;
        }
      }
      if (!c.dead) drive(c);
    }
    connections.erase(std::remove_if(connections.begin(), connections.end(),
                                     [](const std::unique_ptr<Connection>& c) {
                                       if (c->dead) ::close(c->fd);
                                       return c->dead;
                                     }),
                      connections.end());
  }
  for (auto& c : connections) ::close(c->fd);
}

}  // namespace keyway::testing

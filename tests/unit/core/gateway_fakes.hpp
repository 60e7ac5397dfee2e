// Test doubles of the gateway's collaborators, shared by the gateway unit tests: a recording
// responder, a scripted upstream client and an event sink that keeps what it gets.
#pragma once

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/gateway.hpp"

namespace keyway::core::testing {

class RecordingResponder final : public Responder {
 public:
  void send(HttpResponse r) override {
    ++sends;
    response = std::move(r);
    if (on_send) on_send();
  }
  void startStream(int status, std::string_view reason, Headers headers) override {
    streamed = true;
    response.status = status;
    response.reason = std::string(reason);
    response.headers = std::move(headers);
  }
  bool writeChunk(std::string_view data, bool* paused, std::function<void()> drained) override {
    response.body.append(data);
    ++chunks;
    if (pause_next && paused != nullptr) {
      *paused = true;
      pause_next = false;
      on_drained = std::move(drained);
    }
    return !client_gone;
  }
  void endStream() override { ended = true; }
  void abortStream() override { aborted = true; }
  bool http10() const override { return is_http10; }

  HttpResponse response;
  int sends = 0;
  int chunks = 0;
  bool streamed = false, ended = false, aborted = false, is_http10 = false;
  bool pause_next = false, client_gone = false;
  std::function<void()> on_drained;
  // Runs once the response is sent, on the thread that sent it: a client asking again at once.
  std::function<void()> on_send;
};

struct ScriptedCall final : UpstreamCall {
  void cancel() override { ++cancels; }
  void resume() override { ++resumes; }
  int cancels = 0, resumes = 0;
};

// Records requests; the test decides when and how each completes.
class FakeUpstream final : public UpstreamClient {
 public:
  std::shared_ptr<UpstreamCall> start(UpstreamRequest request, std::shared_ptr<UpstreamObserver> observer) override {
    requests.push_back(std::move(request));
    observers.push_back(observer);
    auto call = std::make_shared<ScriptedCall>();
    calls.push_back(call);
    return call;
  }
  void respond(size_t i, int status, std::string body, Headers headers = {{"Content-Type", "application/json"}}) {
    observers[i]->onHeaders(status, "", std::move(headers));
    if (!body.empty()) observers[i]->onBody(body);
    observers[i]->onComplete(UpstreamOutcome{});
  }
  void fail(size_t i, UpstreamFailure f) {
    UpstreamOutcome o;
    o.failure = f;
    o.message = "simulated";
    observers[i]->onComplete(o);
  }
  std::vector<UpstreamRequest> requests;
  std::vector<std::shared_ptr<UpstreamObserver>> observers;
  std::vector<std::shared_ptr<ScriptedCall>> calls;
};

class NullEvents final : public EventSink {
 public:
  void access(const AccessRecord& r) override { records.push_back(r); }
  void warn(std::string_view m, std::initializer_list<EventField> fields = {}) override {
    std::string line(m);
    for (const auto& f : fields) line.append(" ").append(f.key).append("=").append(f.text);
    warnings.push_back(std::move(line));
  }
  bool debugEnabled() const override { return debug_on; }
  void debug(uint64_t request, double, std::string_view m, std::initializer_list<EventField> fields) override {
    std::string line = "#" + std::to_string(request) + " " + std::string(m);
    for (const auto& f : fields) {
      line.append(" ").append(f.key).append("=");
      if (f.kind == EventField::Kind::kText) {
        line.append(f.text);
      } else {
        line.append(std::to_string(f.kind == EventField::Kind::kMillis ? static_cast<int64_t>(f.number) : f.integer));
      }
    }
    debug_lines.push_back(std::move(line));
  }
  bool debug_on = false;
  std::vector<AccessRecord> records;
  std::vector<std::string> warnings;
  std::vector<std::string> debug_lines;
};

inline UpstreamConfig upstreamCfg(const std::string& name, Protocol p) {
  UpstreamConfig u;
  u.name = name;
  u.base_url = "http://127.0.0.1:9/base";
  u.protocol = p;
  u.credential = defaultCredentialFor(p);
  return u;
}

}  // namespace keyway::core::testing

// The gateway's BOSA stages (docs/bosa.md, docs/auth.md "BOSA users", docs/isolation.md "The
// validation rule"): schema discovery from the store, the route and the user a request acts as,
// validation of action inputs, user token minting, and retries with a re-mint on 401.
#include <algorithm>

#include "core/client_token.hpp"
#include "core/gateway.hpp"
#include "core/json_schema.hpp"
#include "core/target.hpp"
#include "core/text.hpp"

namespace keyway::core {

namespace {

int64_t unixMs(const Clock& clock) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(clock.systemNow().time_since_epoch()).count();
}

}  // namespace

void Gateway::forwardBosa(std::shared_ptr<Pending> p, const Identity& id) {
  UpstreamRequest& out = p->out;
  const UpstreamConfig& upstream = *p->upstream;
  // The validation rule (docs/isolation.md): decided once on how BOSA's server would route the
  // path, so no spelling of an action path escapes validation.
  p->bosa_route = classifyBosaPath(targetPath(p->rest));
  const BosaRoute& route = p->bosa_route;
  const bool action_call = route.kind == BosaRouteKind::kAction && out.method == "POST";
  if (p->trace.on()) {
    p->trace("bosa route", {{"kind", bosaRouteKindName(route.kind)},
                            {"connector", route.connector},
                            {"action", route.action},
                            {"canonical", route.canonical}});
  }
  if (action_call && !route.canonical) {
    deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
    respondPendingError(p, Error::make(ErrorCode::kBadRequest,
                                       "this path reaches BOSA action '" + route.connector + "/" + route.action +
                                           "' only after decoding or slash clean-up, and keyway forwards actions "
                                           "only as validated; send POST /connectors/" + route.connector + "/" +
                                           route.action + " (no trailing slash, empty segment or percent-escape)"));
    return;
  }
  // docs/auth.md: act as a BOSA user named by X-Keyway-User (wins) or Authorization: Bearer kwu_<id>.
  bool wants_user = false;
  std::string user;
  if (auto v = headerValue(p->client_headers, "X-Keyway-User")) {
    wants_user = true;
    user = std::string(trimOws(*v));
  }
  std::string handle;  // from the Authorization fields; every one of them is looked at
  for (const auto& h : p->client_headers) {
    if (!iequals(h.name, "Authorization")) continue;
    std::string_view v = trimOws(h.value);
    if (!startsWithNoCase(v, "Bearer ")) continue;
    v = trimOws(v.substr(7));
    if (v.substr(0, 4) != "kwu_") continue;
    if (!handle.empty() && handle != v.substr(4)) {
      respondPendingError(p, Error::make(ErrorCode::kBadRequest,
                                         "the request names two different BOSA users in Authorization; send one "
                                         "Authorization: Bearer kwu_<user> (or X-Keyway-User)"));
      return;
    }
    handle = std::string(v.substr(4));
    wants_user = true;
  }
  const bool user_from_header = !user.empty();
  if (user.empty()) user = handle;
  if (wants_user) {
    if (carriesClientToken(user)) {
      // The token rule reaches logs and messages too: such a "user" is neither echoed nor logged.
      p->ctx->record().user = "(withheld: it holds a client token)";
      deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
      respondPendingError(p, Error::make(ErrorCode::kBadRequest,
                                         "the BOSA user named by X-Keyway-User or Authorization: Bearer kwu_ holds a "
                                         "keyway client token; name the user by its identifier"));
      return;
    }
    // Named on the access line from here on, refused or not.
    p->ctx->record().user = user;
    if (p->trace.on()) {
      p->trace("bosa user asked for", {{"user", user},
                                       {"from", user_from_header ? "X-Keyway-User" : "Authorization: Bearer kwu_"}});
    }
    // The handle is keyway's, never the upstream's: every Authorization field goes.
    removeHeader(out.headers, "Authorization");
    if (!bosaRouteTakesUserToken(route, out.method)) {
      deps_.metrics->rejected_requests.fetch_add(1, std::memory_order_relaxed);
      respondPendingError(p, Error::make(ErrorCode::kBadRequest,
                                         "keyway sends a BOSA user token only with action calls (POST "
                                         "/connectors/{app}/{action}), integration routes (/connectors/{app}/"
                                         "integrations...) and user routes (/users/me, /auth/tokens), spelt exactly "
                                         "so; this request asks for user '" + user + "' on another path"));
      return;
    }
    auto found = user.empty() ? Result<std::optional<BosaUserRecord>>(std::optional<BosaUserRecord>())
                              : deps_.store->findBosaUser(user);
    if (!found.ok()) {
      respondPendingError(p, Error::make(ErrorCode::kUnavailable,
                                         "the credential store could not be read; see keyway's log and retry"));
      return;
    }
    const auto& teams = found->has_value() ? (*found)->teams : std::vector<std::string>();
    if (!found->has_value() || std::find(teams.begin(), teams.end(), id.team.name) == teams.end()) {
      // docs/auth.md: an unknown user and an ungranted one are answered alike, so the client's
      // message names both commands; the access line says which one applies.
      const std::string team = " --team " + id.team.name;
      const Error refused =
          Error::make(ErrorCode::kForbidden, "BOSA user '" + user + "' is unknown or not granted to team '" +
                                                 id.team.name + "'; an operator can run: keywayctl bosa-user add " +
                                                 user + team + " (a user keyway does not know yet) or keywayctl "
                                                 "bosa-user grant " + user + team + " (a known user)");
      const std::string cause =
          found->has_value()
              ? "BOSA user '" + user + "' is not granted to team '" + id.team.name +
                    "'; an operator can run: keywayctl bosa-user grant " + user + team
              : "BOSA user '" + user + "' is unknown to keyway; an operator can run: keywayctl bosa-user add " +
                    user + team;
      p->ctx->respondError(refused, cause);
      return;
    }
    if (!p->api_key) {
      respondPendingError(p, Error::make(ErrorCode::kUnavailable,
                                         "upstream '" + upstream.name + "' injects no client key, so no BOSA user "
                                         "token can be minted; configure its credential.secret"));
      return;
    }
    p->bosa_user = std::move(user);
  }
  if (action_call) {
    bosaValidate(std::move(p));
    return;
  }
  bosaUserToken(std::move(p));
}

void Gateway::serveDiscovery(const UpstreamConfig& upstream, const std::string& rest,
                             std::unique_ptr<RequestContext> ctx) {
  const std::string path(targetPath(rest));
  std::vector<std::string> modules = path == "/connectors/names" ? std::vector<std::string>()
                                                                  : bosaModulesQuery(targetQuery(rest));
  auto config = this->config();  // keeps `upstream` alive while a fetch runs
  // The callback may run on another thread (a fetch's end); the context goes with it.
  std::shared_ptr<RequestContext> shared_ctx(std::move(ctx));
  bosa_schemas_->get(upstream, modules,
                     [this, config, path, modules, shared_ctx](Result<std::shared_ptr<const BosaSnapshot>> snap) {
                       if (!snap.ok()) {
                         shared_ctx->respondError(snap.error());
                         return;
                       }
                       shared_ctx->respond(bosaDiscoveryResponse(**snap, path, modules, unixMs(*deps_.clock)), "HIT");
                     });
}

void Gateway::bosaValidate(std::shared_ptr<Pending> p) {
  // A canonical action path: its spelling is the route's (classifyBosaPath).
  const std::string path = p->bosa_route.path;
  // The connector is wanted, so a new one triggers a refresh.
  std::vector<std::string> want{p->bosa_route.connector};
  const UpstreamConfig& upstream = *p->upstream;
  bosa_schemas_->get(upstream, want, [this, p, path, connector = want[0]](
                                         Result<std::shared_ptr<const BosaSnapshot>> snap) mutable {
    if (!snap.ok()) {
      respondPendingError(p, snap.error());
      return;
    }
    const BosaAction* action = (*snap)->actionForPath(path);
    if (action == nullptr) {
      std::string message;
      const auto names = (*snap)->catalog->actionNames(connector);
      if ((*snap)->catalog->connector(connector) == nullptr) {
        std::string all;
        for (const auto& c : (*snap)->catalog->connectorNames()) all += (all.empty() ? "" : ", ") + c;
        message = "BOSA has no connector '" + connector + "'; available connectors: " + (all.empty() ? "none" : all);
      } else {
        std::string list;
        for (const auto& n : names) list += (list.empty() ? "" : ", ") + n;
        message = "BOSA connector '" + connector + "' has no action '" +
                  std::string(path.substr(path.rfind('/') + 1)) + "'; available actions: " +
                  (list.empty() ? "none" : list);
      }
      respondPendingError(p, Error::make(ErrorCode::kNotFound, message));
      return;
    }
    p->action = action->name;
    const auto content_type = headerValue(p->client_headers, "Content-Type");
    const bool form = content_type && (containsNoCase(*content_type, "multipart/form-data") ||
                                       containsNoCase(*content_type, "application/x-www-form-urlencoded"));
    if (!form) {
      // docs/bosa.md: the body is checked against the action's schema before anything leaves the host.
      rapidjson::Document doc;
      const std::string_view body = p->out.body.empty() ? std::string_view("{}") : std::string_view(p->out.body);
      UpstreamMetrics* um = p->ctx->upstreamMetrics();
      const auto started = p->trace.on() ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
      if (auto st = parseJsonText(body, &doc); !st.ok()) {
        if (p->trace.on()) p->trace("bosa validation", {{"action", action->name}, {"result", "body is not JSON"}});
        if (um != nullptr) um->validation_failures.fetch_add(1, std::memory_order_relaxed);
        respondPendingError(p, Error::make(ErrorCode::kBadRequest, "the body of BOSA action '" + connector + "/" +
                                                                       action->name + "' is " + st.error().message +
                                                                       "; send a JSON object of its parameters"));
        return;
      }
      std::vector<ErrorDetail> violations = validate(*action->schema, doc);
      if (p->trace.on()) {
        p->trace("bosa validation",
                 {{"action", action->name},
                  {"result", violations.empty() ? "valid" : "invalid"},
                  {"violations", violations.size()},
                  EventField::millis("validation_ms", std::chrono::duration<double, std::milli>(
                                                          std::chrono::steady_clock::now() - started)
                                                          .count())});
      }
      if (!violations.empty()) {
        if (um != nullptr) um->validation_failures.fetch_add(1, std::memory_order_relaxed);
        Error error = Error::make(ErrorCode::kInvalidParameters,
                                  std::to_string(violations.size()) + " parameter problem(s) for BOSA action '" +
                                      connector + "/" + action->name + "'; see details (nothing was sent upstream)");
        error.details = std::move(violations);
        respondPendingError(p, error);
        return;
      }
    } else if (p->trace.on()) {
      p->trace("bosa validation", {{"action", action->name}, {"result", "not validated: a form body"}});
    }
    bosaUserToken(std::move(p));
  });
}

void Gateway::bosaUserToken(std::shared_ptr<Pending> p) {
  if (p->bosa_user.empty()) {
    dispatch(std::move(p));
    return;
  }
  const UpstreamConfig& upstream = *p->upstream;
  bosa_tokens_->acquire(upstream, p->bosa_user, *p->api_key, {}, [this, p](Result<AcquiredToken> token) mutable {
    if (!token.ok()) {
      respondPendingError(p, token.error());
      return;
    }
    p->ctx->record().user_token = token->minted ? "minted" : "kept";
    if (p->trace.on()) p->trace("bosa user token", {{"user", p->bosa_user}, {"token", p->ctx->record().user_token}});
    p->user_token_header = "Bearer ";
    p->user_token_header.append(token->token.view());
    p->out.headers.push_back({"Authorization", p->user_token_header});
    dispatch(std::move(p));
  });
}

std::shared_ptr<UpstreamCall> Gateway::startUpstream(const std::shared_ptr<Pending>& p, UpstreamRequest out,
                                                     std::shared_ptr<UpstreamObserver> observer) {
  const UpstreamConfig& upstream = *p->upstream;
  if (upstream.protocol != Protocol::kBosa || !deps_.scheduler || (p->action.empty() && p->bosa_user.empty())) {
    return deps_.upstream->start(std::move(out), std::move(observer));
  }
  RetryPolicy policy = retryPolicyFor(upstream.bosa.retry, p->action);
  // Only action calls are retried (docs/bosa.md); users, tokens and integrations calls go once.
  if (p->action.empty()) policy.max_attempts = 1;
  RetryHooks hooks;
  UpstreamMetrics* um = deps_.metrics->upstreamByName(upstream.name);
  hooks.on_retry = [um, trace = p->trace] {
    if (um != nullptr) um->retries.fetch_add(1, std::memory_order_relaxed);
    if (trace.on()) trace("bosa action retried");
  };
  if (!p->bosa_user.empty()) {
    // docs/auth.md: a 401 to a minted token gets one fresh token and one more try.
    hooks.on_unauthorized = [this, p](UpstreamRequest& request, std::function<void(bool)> done) {
      const std::string rejected = p->user_token_header.substr(7);
      UpstreamRequest* target = &request;
      if (p->trace.on()) p->trace("bosa user token rejected with 401; asking for a new one", {{"user", p->bosa_user}});
      bosa_tokens_->acquire(*p->upstream, p->bosa_user, *p->api_key, rejected,
                            [p, target, done = std::move(done)](Result<AcquiredToken> token) {
                              if (!token.ok()) {
                                done(false);
                                return;
                              }
                              p->user_token_header = "Bearer ";
                              p->user_token_header.append(token->token.view());
                              removeHeader(target->headers, "Authorization");
                              target->headers.push_back({"Authorization", p->user_token_header});
                              done(true);
                            });
    };
  }
  return startWithRetries(deps_.upstream, deps_.scheduler, deps_.clock, std::move(out), policy, std::move(hooks),
                          std::move(observer));
}

}  // namespace keyway::core

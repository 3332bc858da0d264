//! The gRPC service config (feature `serde`): the JSON gRPC users already write, applied to a
//! [`ClientBuilder`] for gRPC.
//!
//! Why: a gRPC team keeps its per-method timeouts and retry policies in a service config
//! (gRPC's `doc/service_config.md`, gRFC A6 for `retryPolicy` and `retryThrottling`); asking
//! them to write it again as builder calls would let the two drift. Every field is either
//! applied or refused with an error naming its path — none is ignored (docs/configuration.md
//! has the table).

use std::time::Duration;

use serde_json::{Map, Value};

use super::builder::ClientBuilder;
use super::route::{Route, RoutePolicy};
use crate::balance::Policy;
use crate::classify::{GrpcClassifier, GrpcCode, GrpcCodes};
use crate::error::ConfigError;
use crate::retry::{Backoff, RetryBudget};

/// The most attempts a `retryPolicy` gets: gRPC clients cap `maxAttempts` at 5 (gRFC A6), and
/// so does this one.
pub const MAX_SERVICE_CONFIG_ATTEMPTS: u32 = 5;

/// A parsed gRPC service config: its method configs, retry throttling and balancing.
///
/// ```
/// use stanchion::client::ServiceConfig;
///
/// let config = ServiceConfig::from_json(r#"{
///   "methodConfig": [{
///     "name": [{"service": "echo.Echo", "method": "Say"}],
///     "timeout": "1.5s",
///     "retryPolicy": {
///       "maxAttempts": 4,
///       "initialBackoff": "0.1s",
///       "maxBackoff": "1s",
///       "backoffMultiplier": 2,
///       "retryableStatusCodes": ["UNAVAILABLE"]
///     }
///   }],
///   "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
/// }"#).unwrap();
/// assert_eq!(config.method_configs().len(), 1);
///
/// let err = ServiceConfig::from_json(r#"{"methodConfig": [{"name": [{}],
///   "hedgingPolicy": {"maxAttempts": 2}}]}"#).unwrap_err();
/// assert_eq!(err.path(), "methodConfig[0].hedgingPolicy");
/// ```
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    methods: Vec<MethodConfig>,
    throttling: Option<(f64, f64)>,
    balance: Option<Policy>,
    warnings: Vec<String>,
}

/// One `methodConfig` entry: the methods it names and what it sets for them.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MethodConfig {
    /// What each `name` entry covers.
    pub names: Vec<MethodName>,
    /// `timeout`: the calls' deadline.
    pub timeout: Option<Duration>,
    /// `waitForReady`.
    pub wait_for_ready: Option<bool>,
    /// `retryPolicy`; `None`: these methods are not retried.
    pub retry: Option<MethodRetryPolicy>,
}

/// What a `name` entry covers: one method, a whole service, or every method (the default).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum MethodName {
    /// `{"service": "pkg.Svc", "method": "M"}`.
    Method {
        /// The service.
        service: String,
        /// The method.
        method: String,
    },
    /// `{"service": "pkg.Svc"}`.
    Service(String),
    /// `{}` (or an empty service): every method no other entry names.
    Default,
}

/// A `retryPolicy` (gRFC A6).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MethodRetryPolicy {
    /// `maxAttempts`, capped at [`MAX_SERVICE_CONFIG_ATTEMPTS`].
    pub max_attempts: u32,
    /// `initialBackoff`.
    pub initial_backoff: Duration,
    /// `maxBackoff`.
    pub max_backoff: Duration,
    /// `backoffMultiplier`.
    pub backoff_multiplier: f64,
    /// `retryableStatusCodes`.
    pub retryable_codes: GrpcCodes,
    /// `perAttemptRecvTimeout`, if given.
    pub per_attempt_timeout: Option<Duration>,
}

/// Where we are in the document, for errors.
struct At<'a>(&'a str);

impl At<'_> {
    fn err(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        let path = if self.0.is_empty() {
            field.to_owned()
        } else if field.is_empty() {
            self.0.to_owned()
        } else {
            format!("{}.{field}", self.0)
        };
        ConfigError::at_path(&path, reason.into())
    }

    /// Refuses any key but `allowed`: what is not applied is not silently dropped.
    fn only(&self, object: &Map<String, Value>, allowed: &[&str]) -> Result<(), ConfigError> {
        for key in object.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(self.err(key, unsupported(key)));
            }
        }
        Ok(())
    }
}

/// Why a field is refused.
fn unsupported(key: &str) -> String {
    match key {
        "hedgingPolicy" => "hedging is not supported (yet); a method config may set \
                            retryPolicy instead (the two are mutually exclusive)"
            .to_owned(),
        "maxRequestMessageBytes" | "maxResponseMessageBytes" => format!(
            "{key} is not applied by stanchion: set it on the generated tonic client \
             (max_encoding_message_size / max_decoding_message_size)"
        ),
        "healthCheckConfig" => {
            "client-side health checking is not supported: endpoints are ejected by their \
             breakers (outlier ejection) instead"
                .to_owned()
        }
        _ => format!("{key:?} is not a service config field stanchion knows"),
    }
}

fn object<'a>(value: &'a Value, at: &At<'_>) -> Result<&'a Map<String, Value>, ConfigError> {
    value
        .as_object()
        .ok_or_else(|| at.err("", "expected a JSON object"))
}

fn number(value: &Value, at: &At<'_>, field: &str) -> Result<f64, ConfigError> {
    value
        .as_f64()
        .ok_or_else(|| at.err(field, format!("{value} is not a number")))
}

/// A protobuf JSON duration: decimal seconds with an `s` suffix and up to nine fractional
/// digits (`"1s"`, `"0.25s"`, `"1.000340012s"`); not negative.
pub(crate) fn proto_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration in seconds (\"1.5s\", \"0.25s\")");
    let digits = text.strip_suffix('s').ok_or_else(bad)?;
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
        || (digits.contains('.') && frac.is_empty())
    {
        return Err(bad());
    }
    let secs: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    // Protobuf's Duration holds at most 315,576,000,000 seconds (10,000 years).
    if secs > 315_576_000_000 {
        return Err(format!("{text:?} is longer than a protobuf duration holds"));
    }
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    Ok(Duration::new(secs, nanos))
}

fn duration(value: &Value, at: &At<'_>, field: &str) -> Result<Duration, ConfigError> {
    let text = value.as_str().ok_or_else(|| {
        at.err(
            field,
            format!("{value} is not a duration string (\"1.5s\")"),
        )
    })?;
    proto_duration(text).map_err(|reason| at.err(field, reason))
}

fn positive_duration(value: &Value, at: &At<'_>, field: &str) -> Result<Duration, ConfigError> {
    let d = duration(value, at, field)?;
    if d.is_zero() {
        return Err(at.err(field, "must be greater than zero"));
    }
    Ok(d)
}

/// A `timeout` or `perAttemptRecvTimeout`: above zero; a longer one than a deadline holds
/// ([`MAX_BUDGET`](crate::deadline::MAX_BUDGET), a year) is a year — gRPC accepts any protobuf
/// duration, and a year is no bound in practice.
fn time_budget(value: &Value, at: &At<'_>, field: &str) -> Result<Duration, ConfigError> {
    Ok(positive_duration(value, at, field)?.min(crate::deadline::MAX_BUDGET))
}

fn required<'a>(
    object: &'a Map<String, Value>,
    at: &At<'_>,
    field: &str,
) -> Result<&'a Value, ConfigError> {
    object
        .get(field)
        .ok_or_else(|| at.err(field, "is required (gRFC A6)"))
}

impl ServiceConfig {
    /// Parses a service config. Errors name the path of the field
    /// (`methodConfig[1].retryPolicy.maxAttempts`) and say why: invalid values as gRPC
    /// rejects them, and every field stanchion does not apply (`hedgingPolicy`,
    /// `healthCheckConfig`, message size limits, an unknown field).
    pub fn from_json(text: &str) -> Result<ServiceConfig, ConfigError> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| ConfigError::at_path("service_config", e.to_string()))?;
        ServiceConfig::from_value(&value)
    }

    /// Parses a service config already read as JSON.
    pub fn from_value(value: &Value) -> Result<ServiceConfig, ConfigError> {
        let top = At("");
        let root = object(value, &At("service_config"))?;
        top.only(
            root,
            &[
                "methodConfig",
                "retryThrottling",
                "loadBalancingPolicy",
                "loadBalancingConfig",
            ],
        )?;
        let mut methods = Vec::new();
        if let Some(list) = root.get("methodConfig") {
            let list = list
                .as_array()
                .ok_or_else(|| top.err("methodConfig", "expected a list"))?;
            for (i, entry) in list.iter().enumerate() {
                let path = format!("methodConfig[{i}]");
                methods.push(method_config(entry, &At(&path))?);
            }
        }
        // gRPC refuses a service config naming one method (or service, or the default) twice.
        let mut seen: Vec<(&MethodName, usize)> = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            for name in &m.names {
                if let Some((_, first)) = seen.iter().find(|(n, _)| *n == name) {
                    return Err(At(&format!("methodConfig[{i}]")).err(
                        "name",
                        format!("{name:?} is named by methodConfig[{first}] too"),
                    ));
                }
                seen.push((name, i));
            }
        }
        let throttling = match root.get("retryThrottling") {
            None => None,
            Some(value) => {
                let at = At("retryThrottling");
                let t = object(value, &at)?;
                at.only(t, &["maxTokens", "tokenRatio"])?;
                let max = number(required(t, &at, "maxTokens")?, &at, "maxTokens")?;
                let ratio = number(required(t, &at, "tokenRatio")?, &at, "tokenRatio")?;
                // Checked now, with A6's ranges, so the error names the field.
                RetryBudget::throttling(max, ratio).build().map_err(|e| {
                    let field = if e.field() == "max_tokens" {
                        "maxTokens"
                    } else {
                        "tokenRatio"
                    };
                    at.err(field, e.reason().to_owned())
                })?;
                Some((max, ratio))
            }
        };
        let mut warnings = Vec::new();
        let balance = balancing(root, &mut warnings)?;
        for warning in &warnings {
            tracing::warn!(%warning, "service config");
        }
        Ok(ServiceConfig {
            methods,
            throttling,
            balance,
            warnings,
        })
    }

    /// The method configs, in order.
    pub fn method_configs(&self) -> &[MethodConfig] {
        &self.methods
    }

    /// `retryThrottling`: `(maxTokens, tokenRatio)`.
    pub fn retry_throttling(&self) -> Option<(f64, f64)> {
        self.throttling
    }

    /// What the config names and stanchion does not apply, though gRPC's rules say to go on
    /// (a `loadBalancingConfig` entry for a policy it does not have, skipped for the next; a
    /// `loadBalancingPolicy` beside a `loadBalancingConfig`). Each is also logged at WARN when
    /// the config is parsed. Everything else not applied is an error.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// `loadBalancingConfig` (the first policy stanchion has, as gRPC picks the first it
/// supports; each one skipped is a warning) or the older `loadBalancingPolicy` (checked even
/// when `loadBalancingConfig` takes precedence, which is a warning too).
fn balancing(
    root: &Map<String, Value>,
    warnings: &mut Vec<String>,
) -> Result<Option<Policy>, ConfigError> {
    let list = root.get("loadBalancingConfig");
    let legacy = match root.get("loadBalancingPolicy").map(|v| v.as_str()) {
        None => None,
        Some(Some(p)) if p.eq_ignore_ascii_case("round_robin") => Some(Policy::RoundRobin),
        // Beside `loadBalancingConfig`, gRPC does not read it: a warning below.
        Some(_) if list.is_some() => Some(Policy::RoundRobin),
        Some(other) => {
            return Err(At("").err(
                "loadBalancingPolicy",
                format!("{other:?}: only round_robin is supported"),
            ));
        }
    };
    let Some(list) = list else {
        return Ok(legacy);
    };
    if legacy.is_some() {
        warnings.push(
            "loadBalancingPolicy is not applied: loadBalancingConfig takes precedence (as in \
             gRPC)"
                .to_owned(),
        );
    }
    let at = At("loadBalancingConfig");
    let list = list
        .as_array()
        .ok_or_else(|| at.err("", "expected a list"))?;
    for (i, entry) in list.iter().enumerate() {
        let path = format!("loadBalancingConfig[{i}]");
        let at = At(&path);
        let policy = object(entry, &at)?;
        if policy.len() != 1 {
            return Err(at.err("", "each entry names exactly one policy"));
        }
        let (name, settings) = policy.iter().next().expect("one entry");
        match name.as_str() {
            "round_robin" => {
                let at = At(&format!("{path}.round_robin"));
                at.only(object(settings, &at)?, &[])?;
                return Ok(Some(Policy::RoundRobin));
            }
            // gRFC A48: power of two choices on outstanding requests.
            "least_request_experimental" => {
                let at = At(&format!("{path}.least_request_experimental"));
                let settings = object(settings, &at)?;
                at.only(settings, &["choiceCount"])?;
                if let Some(count) = settings.get("choiceCount")
                    && count.as_u64() != Some(2)
                {
                    return Err(at.err(
                        "choiceCount",
                        format!("{count}: only 2 choices are supported"),
                    ));
                }
                return Ok(Some(Policy::LeastRequest));
            }
            other => warnings.push(format!(
                "{path}: {other:?} is not a policy stanchion has; the next one in the list is \
                 taken (as gRPC takes the first it supports)"
            )),
        }
    }
    Err(at.err(
        "",
        "names no policy stanchion has (round_robin, least_request_experimental)",
    ))
}

fn method_config(value: &Value, at: &At<'_>) -> Result<MethodConfig, ConfigError> {
    let m = object(value, at)?;
    at.only(m, &["name", "timeout", "waitForReady", "retryPolicy"])?;
    let names = match m.get("name") {
        None => return Err(at.err("name", "is required: the methods this config is for")),
        Some(Value::Array(list)) if !list.is_empty() => list
            .iter()
            .enumerate()
            .map(|(i, n)| method_name(n, &At(&format!("{}.name[{i}]", at.0))))
            .collect::<Result<Vec<_>, _>>()?,
        Some(other) => {
            return Err(at.err("name", format!("{other} is not a non-empty list of names")));
        }
    };
    let timeout = m
        .get("timeout")
        .map(|v| time_budget(v, at, "timeout"))
        .transpose()?;
    let wait_for_ready = match m.get("waitForReady") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(at.err("waitForReady", format!("{other} is not true or false"))),
    };
    let retry = m
        .get("retryPolicy")
        .map(|v| retry_policy(v, &At(&format!("{}.retryPolicy", at.0))))
        .transpose()?;
    Ok(MethodConfig {
        names,
        timeout,
        wait_for_ready,
        retry,
    })
}

fn method_name(value: &Value, at: &At<'_>) -> Result<MethodName, ConfigError> {
    let n = object(value, at)?;
    at.only(n, &["service", "method"])?;
    let text = |field: &str| -> Result<Option<&str>, ConfigError> {
        match n.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(at.err(field, format!("{other} is not a string"))),
        }
    };
    let service = text("service")?.unwrap_or("");
    let method = text("method")?.unwrap_or("");
    let valid = |s: &str| !s.contains(['/', ' ']);
    match (service, method) {
        ("", "") => Ok(MethodName::Default),
        ("", _) => Err(at.err(
            "method",
            "a method needs its service (an empty service means every method)",
        )),
        (s, _) if !valid(s) => Err(at.err("service", format!("{s:?} is not a service name"))),
        (_, m) if !valid(m) => Err(at.err("method", format!("{m:?} is not a method name"))),
        (s, "") => Ok(MethodName::Service(s.to_owned())),
        (s, m) => Ok(MethodName::Method {
            service: s.to_owned(),
            method: m.to_owned(),
        }),
    }
}

fn retry_policy(value: &Value, at: &At<'_>) -> Result<MethodRetryPolicy, ConfigError> {
    let r = object(value, at)?;
    at.only(
        r,
        &[
            "maxAttempts",
            "initialBackoff",
            "maxBackoff",
            "backoffMultiplier",
            "retryableStatusCodes",
            "perAttemptRecvTimeout",
        ],
    )?;
    let attempts = required(r, at, "maxAttempts")?;
    let max_attempts = match attempts.as_u64() {
        Some(n) if n >= 2 => u32::try_from(n)
            .unwrap_or(u32::MAX)
            .min(MAX_SERVICE_CONFIG_ATTEMPTS),
        _ => {
            return Err(at.err(
                "maxAttempts",
                format!("{attempts} is not a whole number of at least 2 (gRFC A6)"),
            ));
        }
    };
    let initial_backoff =
        positive_duration(required(r, at, "initialBackoff")?, at, "initialBackoff")?;
    let max_backoff = positive_duration(required(r, at, "maxBackoff")?, at, "maxBackoff")?;
    let backoff_multiplier = number(
        required(r, at, "backoffMultiplier")?,
        at,
        "backoffMultiplier",
    )?;
    if !backoff_multiplier.is_finite() || backoff_multiplier <= 0.0 {
        return Err(at.err(
            "backoffMultiplier",
            format!("{backoff_multiplier} is not greater than zero (gRFC A6)"),
        ));
    }
    let per_attempt_timeout = r
        .get("perAttemptRecvTimeout")
        .map(|v| time_budget(v, at, "perAttemptRecvTimeout"))
        .transpose()?;
    // Empty only with `perAttemptRecvTimeout`: its cut attempts are then what is retried.
    let codes = match required(r, at, "retryableStatusCodes")? {
        Value::Array(list) if !list.is_empty() || per_attempt_timeout.is_some() => list
            .iter()
            .enumerate()
            .map(|(i, v)| {
                crate::config::code_from(v)
                    .map_err(|reason| at.err(&format!("retryableStatusCodes[{i}]"), reason))
            })
            .collect::<Result<Vec<GrpcCode>, _>>()?,
        other => {
            return Err(at.err(
                "retryableStatusCodes",
                format!(
                    "{other} is not a non-empty list of status codes (gRFC A6; empty only \
                     with perAttemptRecvTimeout)"
                ),
            ));
        }
    };
    if codes.contains(&GrpcCode::Ok) {
        return Err(at.err("retryableStatusCodes", "OK is not a failure to retry"));
    }
    let policy = MethodRetryPolicy {
        max_attempts,
        initial_backoff,
        max_backoff,
        backoff_multiplier,
        retryable_codes: codes.into_iter().collect(),
        per_attempt_timeout,
    };
    // What the backoff refuses (a delay beyond its limit), named by its field here.
    policy.backoff().map_err(|e| {
        let field = match e.field() {
            "backoff base" => "initialBackoff",
            "backoff multiplier" => "backoffMultiplier",
            _ => "maxBackoff",
        };
        at.err(field, e.reason().to_owned())
    })?;
    Ok(policy)
}

impl MethodRetryPolicy {
    /// A6's backoff: `random(0, min(initialBackoff · multiplierⁿ, maxBackoff))`. A multiplier
    /// below 1 is taken as 1 (the delays cannot shrink below the first one here); a
    /// `maxBackoff` below `initialBackoff` caps the first delay too (A6's formula does). Each
    /// delay is at most an hour (the limit of [`Backoff`]): a longer one is refused.
    fn backoff(&self) -> Result<Backoff, ConfigError> {
        Backoff::new(self.initial_backoff.min(self.max_backoff), self.max_backoff)?
            .multiplier(self.backoff_multiplier.clamp(1.0, 1000.0))
    }
}

impl ClientBuilder<GrpcClassifier> {
    /// Applies a gRPC service config: each `methodConfig` becomes a route
    /// (`{"service", "method"}` an exact method, `{"service"}` every method of the service,
    /// `{}` the client's own settings), with its `timeout` as the deadline, `waitForReady`,
    /// and `retryPolicy` as the attempts (capped at 5), backoff, retryable codes and per-try
    /// timeout. As in gRPC, a method the config gives no `retryPolicy` is not retried, so the
    /// client's own `max_attempts` becomes 1 unless the default entry has one.
    /// `retryThrottling` replaces the client's retry budget with gRFC A6's throttling
    /// ([`RetryBudget::throttling`]), one for the client (gRPC keeps one per server name; a
    /// client's clusters with targets of their own share it); without it the client keeps its
    /// own budget. An attempt has no per-try timeout unless its `perAttemptRecvTimeout`
    /// (gRPC's), so a call, and its wait for ready, runs to its deadline. A method or service
    /// an entry names takes nothing from the default entry (gRPC uses one entry per call):
    /// what its entry leaves out is the client's setting from before the service config. Every
    /// listed code is retried, an overload too, without a delay hint
    /// ([`retry_overload_without_hint`](Self::retry_overload_without_hint) is turned on when an
    /// entry has a `retryPolicy`); an
    /// attempt cut by `perAttemptRecvTimeout` is retried whatever the codes
    /// ([`retry_per_try_timeouts`](Self::retry_per_try_timeouts)). The throttling budget is
    /// named after the client as it is named when this is called: call
    /// [`name`](Self::name) first.
    /// `loadBalancingConfig` / `loadBalancingPolicy` choose round robin or least request.
    /// A retryable UNAVAILABLE is retried on any endpoint, as A6 does
    /// ([`UnavailablePolicy::AnyEndpoint`](crate::retry::UnavailablePolicy::AnyEndpoint); the
    /// client's default retries a hint-less one only on another endpoint).
    ///
    /// Settings made earlier for the routes it names merge with it (its values win); later
    /// calls override it as usual.
    ///
    /// # Errors
    /// Whatever [`ServiceConfig::from_json`] refuses, with the field's path.
    pub fn service_config(mut self, config: &ServiceConfig) -> Result<Self, ConfigError> {
        // gRPC picks exactly one method config for a call: a method an entry names takes
        // nothing from the default entry. Its unset fields are the client's own settings from
        // before the service config, pinned on the route — the default entry, applied to the
        // client last, must not reach it.
        let own_deadline = self.deadline;
        let own_wait = self.wait_for_ready;
        let mut default = None;
        for m in &config.methods {
            let mut policy = RoutePolicy::new();
            policy = match m.timeout.or(own_deadline) {
                Some(timeout) => policy.deadline(timeout),
                None => policy.without_deadline(),
            };
            policy = policy.wait_for_ready(m.wait_for_ready.unwrap_or(own_wait));
            // gRPC bounds an attempt only with `perAttemptRecvTimeout`: without it the attempt
            // runs to the deadline (and a call waiting for ready waits to it).
            policy = policy
                .without_per_try_timeout()
                .retry_per_try_timeouts(false);
            match &m.retry {
                Some(r) => {
                    policy = policy
                        .max_attempts(r.max_attempts)
                        .backoff(r.backoff()?)
                        .retryable_codes(r.retryable_codes);
                    // An attempt it cuts is retried whatever its code, as gRPC does.
                    if let Some(per_try) = r.per_attempt_timeout {
                        policy = policy.per_try_timeout(per_try).retry_per_try_timeouts(true);
                    }
                }
                None => policy = policy.without_retries(),
            }
            for name in &m.names {
                let route = match name {
                    MethodName::Method { service, method } => Route::grpc_method(service, method),
                    MethodName::Service(service) => Route::grpc_service(service),
                    MethodName::Default => {
                        default = Some(policy.clone());
                        continue;
                    }
                };
                self = self.route(route, policy.clone());
            }
        }
        // The default entry (or none: gRPC's defaults) on the client itself: no per-try
        // timeout unless its `perAttemptRecvTimeout`, no retries unless its `retryPolicy`.
        self = self.without_per_try_timeout().retry_per_try_timeouts(false);
        match default {
            // Its policy says `without_retries` when it has no `retryPolicy`.
            Some(policy) => self = apply_default(self, &policy),
            None => self = self.without_retries(),
        }
        // A6 retries every listed code, an overload too (RESOURCE_EXHAUSTED, or a proxy's 429
        // that gRPC reads as UNAVAILABLE), unless the server's pushback says otherwise; the
        // client's default retries an overload only with a delay hint. Codes not listed are
        // not retried either way.
        if config.methods.iter().any(|m| m.retry.is_some()) {
            self = self.retry_overload_without_hint(true);
        }
        // A6 retries a retryable code on any endpoint (the balancer still spreads the calls);
        // the client's default retries a hint-less UNAVAILABLE only on another one.
        self = self.unavailable(crate::retry::UnavailablePolicy::AnyEndpoint);
        if let Some((max, ratio)) = config.throttling {
            let budget = RetryBudget::throttling(max, ratio)
                .name(self.name.clone())
                .build()?;
            self = self.retry_budget(budget);
        }
        if let Some(policy) = config.balance {
            self = self.balance(policy);
        }
        Ok(self)
    }
}

/// The default method config's settings, on the client itself.
fn apply_default(
    mut b: ClientBuilder<GrpcClassifier>,
    p: &RoutePolicy,
) -> ClientBuilder<GrpcClassifier> {
    b = match p.deadline {
        Some(Some(deadline)) => b.deadline(deadline),
        Some(None) => b.without_deadline(),
        None => b,
    };
    if let Some(Some(per_try)) = p.per_try {
        b = b.per_try_timeout(per_try);
    }
    if let Some(wait) = p.wait_for_ready {
        b = b.wait_for_ready(wait);
    }
    if let Some(retry) = p.per_try_timeouts {
        b = b.retry_per_try_timeouts(retry);
    }
    if let Some(attempts) = p.max_attempts {
        b = b.max_attempts(attempts);
    }
    if let Some(backoff) = &p.backoff {
        b = b.backoff(backoff.clone());
    }
    if let Some(codes) = p.retryable_codes {
        b = b.retryable_codes(codes);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_durations_parse_as_protobuf_json_writes_them() {
        for (text, want) in [
            ("1s", Duration::from_secs(1)),
            ("0s", Duration::ZERO),
            ("1.5s", Duration::from_millis(1500)),
            (".5s", Duration::from_millis(500)),
            ("0.000000001s", Duration::from_nanos(1)),
            ("10.000340012s", Duration::new(10, 340_012)),
            ("315576000000s", Duration::from_secs(315_576_000_000)),
        ] {
            assert_eq!(proto_duration(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "s",
            "1",
            "1.s",
            "-1s",
            "1.0000000001s",
            "1ms",
            "1 s",
            "+1s",
            "1e3s",
            "315576000001s",
            "99999999999999999999s",
        ] {
            assert!(proto_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}

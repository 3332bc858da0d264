//! What a test server does with each request, and what it saw.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// What the server does with one request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fault {
    /// HTTP status (default 200). On the gRPC server, a non-200 status acts like a proxy error.
    pub status: Option<u16>,
    /// gRPC status code (default OK).
    pub grpc_code: Option<i32>,
    /// Put the gRPC status in the response headers (a trailers-only response) instead of the
    /// trailers.
    pub grpc_in_headers: bool,
    /// Wait this long before answering.
    pub latency: Duration,
    /// A `Retry-After` value to send.
    pub retry_after: Option<String>,
    /// A `grpc-retry-pushback-ms` value to send.
    pub pushback: Option<String>,
    /// Break the connection (HTTP/1) or reset the stream (HTTP/2) instead of answering.
    pub reset: bool,
    /// Never answer.
    pub hang: bool,
    /// gRPC: send the response headers and the message, then reset the stream instead of
    /// sending the trailers.
    pub reset_after_headers: bool,
    /// HTTP: send the head and a first chunk of the body, then never finish the body.
    pub stall_body: bool,
    /// HTTP: send the head at once, then the body in this many chunks, one every this long.
    pub trickle: Option<(u32, Duration)>,
}

impl Fault {
    /// A normal, successful answer.
    pub fn ok() -> Self {
        Fault::default()
    }

    /// Answer with HTTP `status`.
    pub fn status(status: u16) -> Self {
        Fault {
            status: Some(status),
            ..Fault::default()
        }
    }

    /// Answer with gRPC `code`, in the trailers.
    pub fn grpc(code: i32) -> Self {
        Fault {
            grpc_code: Some(code),
            ..Fault::default()
        }
    }

    /// Reset instead of answering.
    pub fn reset() -> Self {
        Fault {
            reset: true,
            ..Fault::default()
        }
    }

    /// gRPC: answer with headers and a message, then reset the stream (no trailers).
    pub fn reset_after_headers() -> Self {
        Fault {
            reset_after_headers: true,
            ..Fault::default()
        }
    }

    /// Send the head and a first chunk, then stall the body forever.
    pub fn stall_body() -> Self {
        Fault {
            stall_body: true,
            ..Fault::default()
        }
    }

    /// Send the head at once, then `chunks` chunks of the body, one every `every`.
    pub fn trickle(chunks: u32, every: Duration) -> Self {
        Fault {
            trickle: Some((chunks, every)),
            ..Fault::default()
        }
    }

    /// Never answer.
    pub fn hang() -> Self {
        Fault {
            hang: true,
            ..Fault::default()
        }
    }

    /// Answer after `latency`.
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Send `Retry-After: value`.
    pub fn retry_after(mut self, value: &str) -> Self {
        self.retry_after = Some(value.to_owned());
        self
    }

    /// Send `grpc-retry-pushback-ms: value`.
    pub fn pushback(mut self, value: &str) -> Self {
        self.pushback = Some(value.to_owned());
        self
    }

    /// Send the gRPC status in the headers (trailers-only response).
    pub fn in_headers(mut self) -> Self {
        self.grpc_in_headers = true;
        self
    }
}

/// The faults a server applies: a script consumed one request at a time, then either a fixed
/// fault or a seeded random choice.
#[derive(Debug)]
pub struct FaultPlan {
    script: Mutex<VecDeque<Fault>>,
    after: After,
}

#[derive(Debug)]
enum After {
    Always(Fault),
    Random {
        rng: Box<Mutex<StdRng>>,
        /// (probability, fault) pairs; the rest of the probability mass succeeds.
        mix: Vec<(f64, Fault)>,
    },
}

impl FaultPlan {
    /// Every request succeeds.
    pub fn healthy() -> Self {
        FaultPlan::always(Fault::ok())
    }

    /// Every request gets `fault`.
    pub fn always(fault: Fault) -> Self {
        FaultPlan {
            script: Mutex::new(VecDeque::new()),
            after: After::Always(fault),
        }
    }

    /// The i-th request gets the i-th fault; requests past the script succeed.
    pub fn scripted(faults: impl IntoIterator<Item = Fault>) -> Self {
        FaultPlan::healthy().with_script(faults)
    }

    /// Each request gets `fault` with `probability`, from an RNG seeded with `seed`, so a run is
    /// repeatable for a given arrival order.
    pub fn seeded(seed: u64, probability: f64, fault: Fault) -> Self {
        FaultPlan::mix(seed, [(probability, fault)])
    }

    /// Each request gets one of the faults with its probability (they add up to at most 1; the
    /// rest succeed), from an RNG seeded with `seed`.
    pub fn mix(seed: u64, mix: impl IntoIterator<Item = (f64, Fault)>) -> Self {
        FaultPlan {
            script: Mutex::new(VecDeque::new()),
            after: After::Random {
                rng: Box::new(Mutex::new(StdRng::seed_from_u64(seed))),
                mix: mix.into_iter().collect(),
            },
        }
    }

    /// Plays `faults` first, then follows this plan.
    pub fn with_script(self, faults: impl IntoIterator<Item = Fault>) -> Self {
        self.script.lock().unwrap().extend(faults);
        self
    }

    /// The fault for the next request.
    pub fn next(&self) -> Fault {
        if let Some(fault) = self.script.lock().unwrap().pop_front() {
            return fault;
        }
        match &self.after {
            After::Always(fault) => fault.clone(),
            After::Random { rng, mix } => {
                let mut draw: f64 = rng.lock().unwrap().random();
                for (probability, fault) in mix {
                    if draw < *probability {
                        return fault.clone();
                    }
                    draw -= probability;
                }
                Fault::ok()
            }
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
    /// When it arrived (tokio time, so exact under a paused clock).
    pub at: tokio::time::Instant,
    /// Which of the server's TCP connections carried it (its accept order, from 0), when the
    /// server says ([`ConnId`]).
    pub conn: Option<usize>,
}

/// The accept order of the TCP connection a request came on (a request extension the hyper
/// test server sets).
#[derive(Debug, Clone, Copy)]
pub struct ConnId(pub usize);

impl Recorded {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Every request a server received, in arrival order.
#[derive(Debug, Default)]
pub struct Recorder {
    requests: Mutex<Vec<Recorded>>,
}

impl Recorder {
    pub fn record(&self, parts: &http::request::Parts, body: bytes::Bytes) {
        self.requests.lock().unwrap().push(Recorded {
            path: parts.uri.path().to_owned(),
            version: parts.version,
            headers: parts.headers.clone(),
            body,
            at: tokio::time::Instant::now(),
            conn: parts.extensions.get::<ConnId>().map(|c| c.0),
        });
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// A copy of what arrived.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

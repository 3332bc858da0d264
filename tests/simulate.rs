//! The `simulate` example's scenario runner (real local servers, real time, small and bounded):
//! its JSON parses, its counts add up, and the retry budget bounds a storm.

#[path = "../examples/simulate/scenario.rs"]
#[allow(dead_code)]
mod scenario;

use std::time::Duration;

use scenario::{Outage, Scenario};

fn small() -> Scenario {
    Scenario {
        requests: 300,
        concurrency: 8,
        latency: Duration::from_millis(1),
        ..Scenario::default()
    }
}

fn counts(json: &serde_json::Value, field: &str) -> u64 {
    json[field]
        .as_object()
        .unwrap_or_else(|| panic!("{field} is not an object: {json}"))
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_report_parses_and_its_counts_add_up() {
    let scenario = Scenario {
        failure_rate: 0.2,
        outages: vec![Outage {
            endpoint: 1,
            start: Duration::from_millis(20),
            end: Duration::from_millis(120),
        }],
        ..small()
    };
    let report = scenario.run().await.unwrap();
    let text = report.to_json().to_string();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();

    let requests = json["requests"].as_u64().unwrap();
    let attempts = json["attempts"].as_u64().unwrap();
    let retries = json["retries"].as_u64().unwrap();
    assert_eq!(requests, 300);
    assert_eq!(json["never_attempted"].as_u64(), Some(0));
    assert_eq!(attempts, requests + retries, "{json}");
    assert!(retries > 0, "a 20 % failure rate caused no retries: {json}");
    assert_eq!(counts(&json, "attempts_per_endpoint"), attempts);
    // Every attempt the client sent reached its server, and nothing else did.
    assert_eq!(json["attempts_per_endpoint"], json["seen_per_endpoint"]);
    assert_eq!(counts(&json, "outcomes"), requests);
    let latency = &json["latency_ms"];
    let (p50, p99, max) = (
        latency["p50"].as_f64().unwrap(),
        latency["p99"].as_f64().unwrap(),
        latency["max"].as_f64().unwrap(),
    );
    assert!(p50 <= p99 && p99 <= max, "{latency}");
    assert!(json["breaker_transitions"].is_object());
    assert!(json["budget_exhaustions"].is_u64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_a_storm_against_servers_that_always_fail() {
    let scenario = Scenario {
        failure_rate: 1.0,
        requests: 400,
        ..small()
    };
    let report = scenario.run().await.unwrap();
    // 20 % of requests plus the 10/s floor over the 10 s window (Finagle's reserve).
    let bound = (0.2 * 400.0) as u64 + 10 * 10;
    assert!(
        report.retries <= bound,
        "{} retries > {bound}",
        report.retries
    );
    assert_eq!(report.attempts(), 400 + report.retries);
    assert!(report.budget_exhaustions > 0);
    assert_eq!(report.outcomes.get("status_503").copied(), Some(400));
}

#[test]
fn scenarios_that_cannot_run_are_refused() {
    for bad in [
        Scenario {
            endpoints: 0,
            ..small()
        },
        Scenario {
            requests: 0,
            ..small()
        },
        Scenario {
            concurrency: 0,
            ..small()
        },
        Scenario {
            failure_rate: 1.5,
            ..small()
        },
        Scenario {
            failure_rate: f64::NAN,
            ..small()
        },
        Scenario {
            failure_status: 1000,
            ..small()
        },
        Scenario {
            outages: vec![Outage {
                endpoint: 7,
                start: Duration::ZERO,
                end: Duration::from_millis(1),
            }],
            ..small()
        },
        Scenario {
            slow: Some((3, Duration::from_millis(1))),
            ..small()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?} was accepted");
    }
}

//! Try a client policy against a failure profile before production.
//!
//! Starts local HTTP servers that fail, stall or go down as the flags say, sends requests
//! through a stanchion client configured by the flags, and reports what happened: attempts per
//! endpoint, retries, budget refusals, breaker transitions, outcomes, latency percentiles.
//!
//! ```text
//! cargo run --example simulate -- --endpoints 5 --failure-rate 0.3 --outage 0:200-800 --json
//! ```
//!
//! Run with `--help` for every flag.

mod scenario;

use std::time::Duration;

use scenario::{Outage, Scenario};

const USAGE: &str = "\
simulate: play a failure profile against local servers through a stanchion client

servers:
  --endpoints N          local servers (default 3)
  --failure-rate F       share of requests each server fails, 0 to 1 (default 0.1)
  --failure-status CODE  the status of a failure (default 503)
  --latency MS           each answer's latency (default 2)
  --slow I:MS            server I answers in MS instead
  --retry-after SECS     send Retry-After: SECS with every failure
  --outage I:START-END   server I fails everything from START to END ms into the run (repeatable)
load:
  --requests N           requests in all (default 1000)
  --concurrency N        requests in flight at once (default 16)
client policy:
  --deadline MS          total budget per request (default 1000)
  --per-try MS           per-attempt timeout (default 300)
  --max-attempts N       attempts per request, the first included (default 3)
  --budget-ratio F       retry budget: retries per request (default 0.2)
  --budget-per-second N  retry budget: retries always allowed per second (default 10)
  --bulkhead N           N requests at once and N waiting (default: the client's 100 + 50)
output:
  --seed N               seeds the servers' failures and the backoff jitter (default 1)
  --json                 one JSON object instead of the human report
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        print!("{USAGE}");
        return;
    }
    let (scenario, json) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            eprintln!("simulate: {message}\n\n{USAGE}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("simulate: cannot start the runtime: {error}");
            std::process::exit(1);
        }
    };
    match runtime.block_on(scenario.run()) {
        Ok(report) if json => println!("{}", report.to_json()),
        Ok(report) => {
            println!("{}", describe(&scenario));
            print!("{}", report.human());
        }
        Err(error) => {
            eprintln!("simulate: {error}");
            std::process::exit(1);
        }
    }
}

fn describe(s: &Scenario) -> String {
    format!(
        "{} requests, {} at a time, over {} servers (failure rate {}, status {}, latency {:?}{}{}{})\n\
         client: deadline {:?}, per-try {:?}, {} attempts, budget {} + {}/s\n",
        s.requests,
        s.concurrency,
        s.endpoints,
        s.failure_rate,
        s.failure_status,
        s.latency,
        s.slow
            .map(|(i, d)| format!(", server {i} slow: {d:?}"))
            .unwrap_or_default(),
        s.retry_after
            .map(|r| format!(", Retry-After {r}"))
            .unwrap_or_default(),
        s.outages
            .iter()
            .map(|o| format!(", server {} down {:?}..{:?}", o.endpoint, o.start, o.end))
            .collect::<String>(),
        s.deadline,
        s.per_try,
        s.max_attempts,
        s.budget_ratio,
        s.budget_per_second,
    )
}

/// Flags to a scenario (and whether to print JSON).
fn parse(args: &[String]) -> Result<(Scenario, bool), String> {
    let mut s = Scenario::default();
    let mut json = false;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--json" {
            json = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |what: &str| -> Result<u64, String> {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag} {value:?}: {what} expected"))
        };
        let ms = || num("milliseconds").map(Duration::from_millis);
        match flag.as_str() {
            "--endpoints" => s.endpoints = num("a count")? as usize,
            "--requests" => s.requests = num("a count")? as usize,
            "--concurrency" => s.concurrency = num("a count")? as usize,
            "--failure-rate" => {
                s.failure_rate = value
                    .parse()
                    .map_err(|_| format!("{flag} {value:?}: a number from 0 to 1 expected"))?
            }
            "--failure-status" => {
                s.failure_status = u16::try_from(num("an HTTP status")?)
                    .map_err(|_| format!("{flag} {value}: not an HTTP status"))?
            }
            "--latency" => s.latency = ms()?,
            "--slow" => {
                let (i, d) = value
                    .split_once(':')
                    .ok_or_else(|| format!("{flag} {value:?}: I:MS expected"))?;
                s.slow = Some((
                    i.parse()
                        .map_err(|_| format!("{flag} {value:?}: bad server index"))?,
                    Duration::from_millis(
                        d.parse()
                            .map_err(|_| format!("{flag} {value:?}: bad milliseconds"))?,
                    ),
                ));
            }
            "--retry-after" => s.retry_after = Some(num("seconds")?),
            "--outage" => s.outages.push(
                parse_outage(value)
                    .ok_or_else(|| format!("{flag} {value:?}: I:START-END (ms) expected"))?,
            ),
            "--deadline" => s.deadline = ms()?,
            "--per-try" => s.per_try = ms()?,
            "--max-attempts" => s.max_attempts = u32::try_from(num("a count")?).unwrap_or(u32::MAX),
            "--budget-ratio" => {
                s.budget_ratio = value
                    .parse()
                    .map_err(|_| format!("{flag} {value:?}: a number expected"))?
            }
            "--budget-per-second" => {
                s.budget_per_second = u32::try_from(num("a count")?).unwrap_or(u32::MAX)
            }
            "--bulkhead" => s.bulkhead = Some(num("a count")? as usize),
            "--seed" => s.seed = num("a number")?,
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    s.validate()?;
    Ok((s, json))
}

fn parse_outage(value: &str) -> Option<Outage> {
    let (endpoint, window) = value.split_once(':')?;
    let (start, end) = window.split_once('-')?;
    Some(Outage {
        endpoint: endpoint.parse().ok()?,
        start: Duration::from_millis(start.parse().ok()?),
        end: Duration::from_millis(end.parse().ok()?),
    })
}

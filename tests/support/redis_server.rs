//! A private `redis-server` on a free loopback port, started from Debian's binary for one test
//! and killed when dropped.
//!
//! Without the binary the tests that need it print "skipped: redis-server not found" — unless
//! `STANCHION_REQUIRE_REDIS=1` is set (as `.ci/run` sets it), when they fail instead.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Child,
    port: u16,
}

impl RedisServer {
    /// Starts a server, or `None` (after saying so) when there is no `redis-server` and Redis is
    /// not required.
    pub async fn start(test: &str) -> Option<RedisServer> {
        let required = std::env::var("STANCHION_REQUIRE_REDIS").is_ok_and(|v| v == "1");
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().unwrap().port()
        };
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                eprintln!(
                    "{test}: skipped: redis-server not found (set STANCHION_REQUIRE_REDIS=1 to fail instead)"
                );
                return None;
            }
            Err(e) => panic!("{test}: cannot start redis-server: {e}"),
        };
        let server = RedisServer { child, port };
        // Wait (bounded) until it answers.
        let started = Instant::now();
        loop {
            if let Ok(client) = redis::Client::open(server.url())
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return Some(server);
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{test}: redis-server on port {port} did not answer within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

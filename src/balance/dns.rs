//! DNS resolution with hickory-resolver: every A and AAAA record of a name, with the answer's
//! TTL, so the balancer re-resolves when the records expire (if sooner than its interval).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;

use super::{Resolve, ResolveFuture, Resolved};
use crate::error::ConfigError;

/// Resolves `name` to every A and AAAA record, each with `port`.
///
/// hickory's own cache is off: the balancer decides when to re-resolve (the refresh interval,
/// or the records' TTL if sooner). Every failure is a resolver *error* — a timeout, a server
/// failure, and also "no such name" (NXDOMAIN) and "no records": a name that had addresses and
/// lost them mid-rollout must not wipe the endpoints, so the balancer keeps the last known ones
/// (up to its maximum staleness).
#[derive(Clone)]
pub struct DnsResolver {
    resolver: Arc<TokioResolver>,
    name: Arc<str>,
    port: u16,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsResolver")
            .field("name", &self.name)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl DnsResolver {
    /// Uses the system's resolver configuration (`/etc/resolv.conf` on Unix).
    pub fn system(name: impl Into<Arc<str>>, port: u16) -> Result<Self, ConfigError> {
        let builder = TokioResolver::builder_tokio()
            .map_err(|e| ConfigError::new("resolver", format!("system DNS configuration: {e}")))?;
        Ok(DnsResolver::from_builder(builder, name, port))
    }

    /// Asks the DNS server at `server` (UDP, then TCP) only: a cluster DNS, or a test server.
    pub fn with_server(name: impl Into<Arc<str>>, port: u16, server: SocketAddr) -> Self {
        let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
        let config = ResolverConfig::from_parts(None, Vec::new(), servers);
        let builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        DnsResolver::from_builder(builder, name, port)
    }

    fn from_builder(
        mut builder: hickory_resolver::ResolverBuilder<TokioConnectionProvider>,
        name: impl Into<Arc<str>>,
        port: u16,
    ) -> Self {
        let options = builder.options_mut();
        options.cache_size = 0;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        DnsResolver {
            resolver: Arc::new(builder.build()),
            name: name.into(),
            port,
        }
    }

    /// The name resolved.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Resolve for DnsResolver {
    fn name(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn resolve(&self) -> ResolveFuture {
        let resolver = self.resolver.clone();
        let name = self.name.clone();
        let port = self.port;
        Box::pin(async move {
            match resolver.lookup_ip(&*name).await {
                Ok(lookup) => {
                    let ttl = lookup
                        .valid_until()
                        .saturating_duration_since(Instant::now());
                    let addrs = lookup
                        .iter()
                        .map(|ip: IpAddr| SocketAddr::new(ip, port))
                        .collect();
                    Ok(Resolved {
                        addrs,
                        ttl: Some(ttl),
                    })
                }
                Err(e) => Err(e.into()),
            }
        })
    }
}

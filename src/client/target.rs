//! [`Target`]: where a client's endpoints come from.

use std::net::SocketAddr;
#[cfg(feature = "dns")]
use std::sync::Arc;

use crate::balance::{Resolve, StaticResolver};
#[cfg(feature = "dns")]
use crate::error::ConfigError;

/// Where a client's endpoints come from.
pub struct Target {
    pub(super) resolver: Box<dyn Resolve>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").finish_non_exhaustive()
    }
}

impl Target {
    /// A fixed list of addresses.
    pub fn addrs(addrs: impl IntoIterator<Item = SocketAddr>) -> Target {
        Target::resolver(StaticResolver::new(addrs))
    }

    /// Every A/AAAA record of `name` (e.g. a Kubernetes headless Service), re-resolved by TTL,
    /// with the system's DNS configuration.
    #[cfg(feature = "dns")]
    pub fn dns(name: impl Into<Arc<str>>, port: u16) -> Result<Target, ConfigError> {
        Ok(Target::resolver(crate::balance::DnsResolver::system(
            name, port,
        )?))
    }

    /// Any resolver (a [`DnsResolver`](crate::balance::DnsResolver) against a chosen server, a
    /// [`StaticResolver`] you update, your own service discovery).
    pub fn resolver(resolver: impl Resolve) -> Target {
        Target {
            resolver: Box::new(resolver),
        }
    }
}

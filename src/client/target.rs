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
    /// The target as data, when it is data (addresses, a DNS name): what
    /// [`ClientBuilder::config`](super::ClientBuilder::config) writes.
    #[cfg(feature = "serde")]
    pub(super) data: Option<super::TargetConfig>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target").finish_non_exhaustive()
    }
}

impl Target {
    /// A fixed list of addresses.
    pub fn addrs(addrs: impl IntoIterator<Item = SocketAddr>) -> Target {
        let addrs: Vec<SocketAddr> = addrs.into_iter().collect();
        #[cfg(feature = "serde")]
        let data = Some(super::TargetConfig::Addrs(addrs.clone()));
        Target {
            resolver: Box::new(StaticResolver::new(addrs)),
            #[cfg(feature = "serde")]
            data,
        }
    }

    /// Every A/AAAA record of `name` (e.g. a Kubernetes headless Service), re-resolved by TTL,
    /// with the system's DNS configuration.
    #[cfg(feature = "dns")]
    pub fn dns(name: impl Into<Arc<str>>, port: u16) -> Result<Target, ConfigError> {
        let name: Arc<str> = name.into();
        #[cfg(feature = "serde")]
        let data = Some(super::TargetConfig::Dns {
            name: name.to_string(),
            port,
        });
        Ok(Target {
            resolver: Box::new(crate::balance::DnsResolver::system(name, port)?),
            #[cfg(feature = "serde")]
            data,
        })
    }

    /// Any resolver (a [`DnsResolver`](crate::balance::DnsResolver) against a chosen server, a
    /// [`StaticResolver`] you update, your own service discovery).
    pub fn resolver(resolver: impl Resolve) -> Target {
        Target {
            resolver: Box::new(resolver),
            #[cfg(feature = "serde")]
            data: None,
        }
    }
}

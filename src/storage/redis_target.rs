//! Where Redis is: one server (`REDIS_URL`) or the seed nodes of a Redis Cluster
//! (`REDIS_CLUSTER_URLS`), with the TLS settings of either. The pool
//! ([`super::redis_pool`]) and the event listener ([`super::events`]) each build their own
//! connections from it.
//!
//! Owns the choice of deployment and how its clients are built; must not issue commands.

use redis::cluster::ClusterClientBuilder;

/// The Redis the service uses.
#[derive(Clone)]
pub enum RedisTarget {
    /// One Redis server.
    Standalone(redis::Client),
    /// A Redis Cluster, reached through its seed nodes.
    Cluster(ClusterSeeds),
}

/// The seed nodes of a cluster (the rest of the topology is discovered from them), and
/// the CA to trust for `rediss://` seeds.
#[derive(Clone)]
pub struct ClusterSeeds {
    /// The parsed seed URLs (any reachable one is enough to find the others).
    nodes: Vec<redis::ConnectionInfo>,
    /// A PEM CA certificate to trust besides the public roots (`REDIS_TLS_CA_FILE`).
    root_cert: Option<Vec<u8>>,
}

impl ClusterSeeds {
    /// The seeds of `urls` (`redis://` or `rediss://`), trusting `root_cert` for TLS.
    pub fn new(urls: &[String], root_cert: Option<Vec<u8>>) -> redis::RedisResult<Self> {
        let nodes = urls
            .iter()
            .map(|url| redis::IntoConnectionInfo::into_connection_info(url.as_str()))
            .collect::<redis::RedisResult<Vec<_>>>()?;
        let seeds = Self { nodes, root_cert };
        // Checks now what `build` would refuse later (mixed TLS modes or passwords).
        seeds.builder().build()?;
        Ok(seeds)
    }

    /// A client builder for these seeds, with their TLS settings.
    pub fn builder(&self) -> ClusterClientBuilder {
        let builder = ClusterClientBuilder::new(self.nodes.clone());
        let tls = self
            .nodes
            .iter()
            .any(|node| matches!(node.addr(), redis::ConnectionAddr::TcpTls { .. }));
        match &self.root_cert {
            Some(root_cert) if tls => builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert.clone()),
            }),
            _ => builder,
        }
    }
}

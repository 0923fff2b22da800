//! The `[rest]` section: where the REST API listens, its token, and its
//! bounds on clients.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where the token is kept when the config names neither `token` nor `token_file`.
pub const DEFAULT_TOKEN_FILE: &str = "/run/ctgate/rest-token";
/// Most client connections at once (event streams included); more are closed
/// at accept, so a flood cannot queue up behind them.
pub const MAX_CONNECTIONS: usize = 512;

/// `[rest]`: the REST API.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RestConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Listen address; keep it on loopback or a management network. Default
    /// 127.0.0.1:8080. An address ctgate cannot take is an error at start
    /// (another process holding it would receive the CLI's token): choose
    /// another, or set `enabled = false` to run without the API.
    #[serde(default)]
    pub bind: Option<String>,
    /// The bearer token of mutating calls.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (created with a random one, mode 0600, if
    /// missing). Default when `token` is not set: /run/ctgate/rest-token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// How many events a subscriber of /api/v1/conntrack/events may fall behind.
    #[serde(default = "default_subscriber_queue")]
    pub subscriber_queue: usize,
    /// Event streams (/api/v1/conntrack/events) open at once; more get 429.
    #[serde(default = "default_max_subscribers")]
    pub max_subscribers: usize,
}

fn yes() -> bool {
    true
}
/// The API's address when `[rest] bind` is not set.
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
fn default_subscriber_queue() -> usize {
    4096
}
fn default_max_subscribers() -> usize {
    16
}

impl Default for RestConfig {
    fn default() -> Self {
        RestConfig {
            enabled: true,
            bind: None,
            token: None,
            token_file: None,
            subscriber_queue: default_subscriber_queue(),
            max_subscribers: default_max_subscribers(),
        }
    }
}

impl RestConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(b) = &self.bind {
            b.parse::<SocketAddr>().map_err(|_| {
                format!("[rest] bind = {b:?}: use ADDRESS:PORT, e.g. \"127.0.0.1:8080\"")
            })?;
        }
        if self.token.as_deref().is_some_and(|t| t.trim().len() < 8) {
            return Err("[rest] token: use at least 8 characters".into());
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err("[rest]: set token or token_file, not both".into());
        }
        if !(1..=1 << 20).contains(&self.subscriber_queue) {
            return Err("[rest] subscriber_queue: between 1 and 1048576".into());
        }
        if !(1..=MAX_CONNECTIONS / 2).contains(&self.max_subscribers) {
            return Err(format!(
                "[rest] max_subscribers: between 1 and {} (half the API's connections)",
                MAX_CONNECTIONS / 2
            ));
        }
        Ok(())
    }
}

//! The REST API (DESIGN.md section 5), on its own thread with a small tokio
//! runtime: the control lcore's CPU, never a worker's. It reads what the
//! workers publish (per-lcore counters, the lock-striped table, the event
//! queues) and never makes them wait longer than one stripe lock at a time.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | /healthz | status, table fill, table-pressure warning |
//! | GET | /api/v1/stats | global / per-lcore / per-port counters, nf_conntrack counters, heavy hitters, policy, NAT |
//! | GET | /metrics | Prometheus text format |
//! | GET | /api/v1/conntrack | `conntrack -L` with filters (see `filter`), `limit` / `offset` (token) |
//! | GET | /api/v1/conntrack/count | `conntrack -C` (with filters: how many match) (token) |
//! | DELETE | /api/v1/conntrack | `conntrack -D` by filter (token) |
//! | POST | /api/v1/conntrack/flush | `conntrack -F` (token) |
//! | GET | /api/v1/conntrack/events | `conntrack -E` as server-sent events, with filters (token) |
//! | GET, PUT | /api/v1/timeouts | the nf_conntrack_* sysctls (PUT: token) |
//! | GET | /api/v1/ports | link, counters, xstats |
//! | GET | /api/v1/nat | NAT rules and pools |
//! | PUT | /api/v1/nat/pools/{pool}/backends/{index} | `{"healthy": bool}` (token) |
//!
//! Changes, and reads of connection data (every flow's addresses: on Linux
//! `conntrack -L` needs CAP_NET_ADMIN), need `Authorization: Bearer TOKEN`
//! (compared in constant time): 401 without it; health, stats, ports, NAT
//! rules and `/metrics` stay open. Malformed requests get 400, unknown paths
//! 404, always with a JSON body `{"error": "..."}`. Bounds, so that no client
//! can exhaust the API: a client has 10 s to send a request's headers (an
//! idle kept-alive connection too) and 10 s for its body, of at most 64 KiB
//! (413); at most 512 connections are served at once (more are closed at
//! accept); at most `[rest] max_subscribers` event streams (429 beyond).
//! The address the API bound is written beside the token file (`rest-addr`,
//! mode 0600, with ctgate's pid), so that the CLI sends the token only to
//! the API this ctgate runs.

pub mod filter;
pub mod ha;
pub mod metrics;
pub mod telemetry;
pub mod write_timeout;

use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use ctcore::event::Event;
use ctcore::nat::Backend;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use crate::config::format_mac;
use crate::config::rest::MAX_CONNECTIONS;
pub use crate::config::rest::{RestConfig, DEFAULT_BIND, DEFAULT_TOKEN_FILE};
use crate::dpdk::{Mempool, Port, PortStats};
use crate::events;
use crate::neigh::NeighTable;
use crate::pipeline::{Published, Shared};
use crate::stats::{SharedStats, Totals};
use crate::top_sources::{TopSource, TOP_SOURCES};
use filter::{conn_json, Filter};
use write_timeout::WriteTimeout;

/// At most one "too many clients" log line per this interval.
const PRESSURE_LOG_EVERY: Duration = Duration::from_secs(10);
/// Largest page of connections one request returns.
pub const MAX_LIMIT: usize = 100_000;
const DEFAULT_LIMIT: usize = 1000;

/// Why the REST API could not start; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum RestError {
    #[error("REST API: cannot listen on {bind}: {reason} (set another [rest] bind, stop what uses that port, or set [rest] enabled = false)")]
    Bind { bind: String, reason: String },
    #[error("REST API: token file {path}: {reason} (fix it, or set [rest] token)")]
    Token { path: String, reason: String },
    #[error("REST API: cannot write its address to {path}: {reason} (the CLI reads it: make that directory writable, or set [rest] token_file elsewhere)")]
    AddrFile { path: String, reason: String },
    #[error("REST API: cannot start its thread: {0}")]
    Thread(std::io::Error),
}

/// Reads the token file, creating it with a random token if it is missing.
fn load_token(cfg: &RestConfig) -> Result<String, RestError> {
    if let Some(t) = &cfg.token {
        return Ok(t.trim().to_owned());
    }
    let path = cfg
        .token_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_TOKEN_FILE));
    let err = |reason: String| RestError::Token {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 8 => Ok(s.trim().to_owned()),
        Ok(_) => Err(err("holds fewer than 8 characters".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = random_token().map_err(|e| err(e.to_string()))?;
            match write_private(&path, &token) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "REST API: created a token file for mutating calls");
                    Ok(token)
                }
                // Another ctgate created it meanwhile (complete: see write_private).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::fs::read_to_string(&path)
                        .map(|s| s.trim().to_owned())
                        .map_err(|e| err(e.to_string()))
                }
                Err(e) => Err(err(format!("cannot create it: {e}"))),
            }
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The file the API's address goes in: `rest-addr` beside the token file.
pub fn addr_file(token_file: Option<&FsPath>) -> PathBuf {
    token_file
        .unwrap_or(FsPath::new(DEFAULT_TOKEN_FILE))
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(FsPath::new("."))
        .join("rest-addr")
}

/// Writes `ADDR PID` into `path` (mode 0600, replaced atomically).
fn write_addr_file(path: &FsPath, addr: SocketAddr) -> std::io::Result<()> {
    let tmp = write_tmp(path, &format!("{addr} {}", std::process::id()))?;
    std::fs::rename(&tmp, path)
}

/// Removes the address file if this process wrote it (another ctgate may
/// have replaced it since).
fn remove_addr_file(path: &FsPath) {
    let ours = std::fs::read_to_string(path)
        .is_ok_and(|s| s.split_whitespace().nth(1) == Some(&std::process::id().to_string()));
    if ours {
        let _ = std::fs::remove_file(path);
    }
}

fn random_token() -> std::io::Result<String> {
    let mut b = [0u8; 24];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Creates `path` (mode 0600) holding `text`, atomically: written to a
/// temporary file, then linked into place (AlreadyExists if it appeared).
fn write_private(path: &FsPath, text: &str) -> std::io::Result<()> {
    let tmp = write_tmp(path, text)?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked
}

/// `text` and a newline in a new mode-0600 file beside `path` (its
/// directory made, mode 0700, if missing); the file's path.
fn write_tmp(path: &FsPath, text: &str) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, format!("{text}\n").as_bytes())?;
    Ok(tmp)
}

/// What the control side hands the REST API.
pub struct Context {
    pub shared: Arc<Shared>,
    pub stats: Arc<SharedStats>,
    /// Read-locked while in use: control takes the ports back (write lock) to close them.
    pub ports: Arc<std::sync::RwLock<Vec<Port>>>,
    pub port_names: Vec<String>,
    /// Per port (in `port_names` order): the index of its device in
    /// `ports`, and its VLAN id (a sub-port: its parent's device; 0 for a
    /// physical port).
    pub port_devices: Vec<(usize, u16)>,
    /// The workers' lcores, in worker order.
    pub workers: Vec<u32>,
    pub tsc_hz: u64,
    /// The packet pool, for its use count. Weak: control frees the pool
    /// after stopping the server, before the EAL, whatever a request that
    /// outlives the server still holds.
    pub pool: std::sync::Weak<Mempool>,
    pub neigh: Arc<NeighTable>,
    /// State sync with an HA peer, if `[sync] enabled`.
    pub ha: Option<Arc<crate::ha::Ha>>,
}

/// The server's state, shared by the handlers.
pub struct State {
    ctx: Context,
    token: String,
    events: Arc<events::Hub>,
    /// `[rest] max_subscribers`.
    max_subscribers: usize,
    started: Instant,
    /// The conntrack worker context deletes run in (their DESTROY events).
    deleter: Mutex<ctcore::engine::Worker>,
    /// One permit per client connection the server may hold (`MAX_CONNECTIONS`).
    slots: Arc<tokio::sync::Semaphore>,
    /// What the API turned away because a bound was reached.
    refused: Arc<Refused>,
}

/// Clients turned away at a bound: connections beyond `MAX_CONNECTIONS`
/// (closed at accept), event streams beyond `max_subscribers` (429).
#[derive(Default)]
pub struct Refused {
    pub connections: std::sync::atomic::AtomicU64,
    pub subscribers: std::sync::atomic::AtomicU64,
}

impl State {
    fn now_ms(&self) -> u64 {
        self.ctx.shared.now_ms(self.ctx.tsc_hz)
    }

    /// Deletes the connections `f` selects; their DESTROY events go to the subscribers.
    fn delete(&self, f: &Filter) -> usize {
        let now = self.now_ms();
        let mut w = self.deleter.lock().unwrap_or_else(|e| e.into_inner());
        let n = self
            .ctx
            .shared
            .engine
            .delete_where(&mut w, now, |c| f.matches(c));
        w.events.drain(|e| self.events.publish(e));
        self.events.lost(std::mem::take(&mut w.events.dropped));
        n
    }

    /// Whether the table was under pressure recently (see [`Shared::check_pressure`]).
    fn check_pressure(&self) -> (bool, Option<f64>) {
        self.ctx.shared.check_pressure()
    }

    /// Client connections open now (event streams and this request included).
    fn open_connections(&self) -> usize {
        MAX_CONNECTIONS - self.slots.available_permits()
    }

    /// (connections, event streams) refused at their bounds so far.
    fn refusals(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.refused.connections.load(Relaxed),
            self.refused.subscribers.load(Relaxed),
        )
    }
}

/// A port's state for stats and metrics.
struct PortView {
    name: String,
    id: u16,
    driver: String,
    mac: String,
    link_up: bool,
    speed_mbps: u32,
    stats: PortStats,
    /// A VLAN sub-port's id (its link is its parent's), 0 for a physical port.
    vlan: u16,
}

/// The counters at one moment, for /api/v1/stats and /metrics.
pub struct Snapshot {
    lcores: Vec<Totals>,
    totals: Totals,
    ct: Vec<Published>,
    ct_total: Published,
    ports: Vec<PortView>,
    policy_hits: Vec<u64>,
    worker_events_dropped: u64,
    pressure_recent: bool,
}

impl Snapshot {
    fn take(st: &State) -> Snapshot {
        let ctx = &st.ctx;
        let nports = ctx.port_names.len();
        let lcores: Vec<Totals> = (0..ctx.stats.len())
            .map(|i| Totals::sum(&ctx.stats[i..=i], nports))
            .collect();
        let ct = ctx.shared.per_worker();
        let ct_total = ctx.shared.totals();
        let devices = ctx.ports.read().unwrap_or_else(|e| e.into_inner());
        let ports = ctx
            .port_devices
            .iter()
            .zip(&ctx.port_names)
            .filter_map(|(&(d, vlan), name)| {
                let p = devices.get(d)?;
                let link = p.link();
                // A sub-port's NIC counters are its parent's: not repeated.
                Some(PortView {
                    name: name.clone(),
                    id: p.id().0,
                    driver: if vlan == 0 {
                        p.info().driver.clone()
                    } else {
                        format!("vlan {vlan}")
                    },
                    mac: format_mac(&p.info().mac),
                    link_up: link.up,
                    speed_mbps: link.speed_mbps,
                    stats: if vlan == 0 {
                        p.stats()
                    } else {
                        Default::default()
                    },
                    vlan,
                })
            })
            .collect();
        drop(devices);
        let (pressure_recent, _) = st.check_pressure();
        Snapshot {
            totals: Totals::sum(&ctx.stats, nports),
            lcores,
            policy_hits: ct_total.policy_hits.clone(),
            worker_events_dropped: ct_total.ct.events_dropped,
            ct,
            ct_total,
            ports,
            pressure_recent,
        }
    }
}

/// Handle of the running server; stopping (or dropping) it ends the thread.
pub struct RestServer {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub addr: SocketAddr,
    /// Where the address was written (removed at stop).
    addr_file: PathBuf,
}

impl RestServer {
    pub fn stop(self) {}
}

impl Drop for RestServer {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        remove_addr_file(&self.addr_file);
    }
}

/// Starts the server if `[rest] enabled`. It must be stopped before the ports
/// in `ctx` are closed.
pub fn start(cfg: &RestConfig, ctx: Context) -> Result<Option<RestServer>, RestError> {
    if !cfg.enabled {
        return Ok(None);
    }
    let token = load_token(cfg)?;
    let bind = cfg.bind.as_deref().unwrap_or(DEFAULT_BIND);
    let bind_err = |e: std::io::Error| RestError::Bind {
        bind: bind.to_owned(),
        reason: e.to_string(),
    };
    // An address that is taken is an error, the default too: whatever holds
    // it would get the CLI's requests (and, before, its token).
    let listener = std::net::TcpListener::bind(bind).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    let addr = listener.local_addr().map_err(bind_err)?;
    let addr_file = addr_file(cfg.token_file.as_deref());
    write_addr_file(&addr_file, addr).map_err(|e| RestError::AddrFile {
        path: addr_file.display().to_string(),
        reason: e.to_string(),
    })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .thread_name("ctgate-rest")
        .build()
        .map_err(RestError::Thread)?;
    let deleter = ctx.shared.engine.worker(cfg.subscriber_queue);
    let state = Arc::new(State {
        ctx,
        token,
        events: Arc::new(events::Hub::new(cfg.subscriber_queue)),
        max_subscribers: cfg.max_subscribers,
        started: Instant::now(),
        deleter: Mutex::new(deleter),
        slots: Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS)),
        refused: Arc::default(),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("ctgate-rest".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "REST API: cannot use its socket");
                        return;
                    }
                };
                tokio::spawn(state.events.clone().pump(state.ctx.shared.clone()));
                if let Some(ha) = state.ctx.ha.clone() {
                    tokio::spawn(crate::ha::task::run(
                        ha,
                        state.ctx.shared.clone(),
                        state.events.clone(),
                        state.ctx.tsc_hz,
                    ));
                }
                let (slots, refused) = (state.slots.clone(), state.refused.clone());
                tokio::select! {
                    _ = serve(listener, slots, refused, router(state)) => {}
                    _ = stop_rx => {}
                }
            });
            // Open event streams never end by themselves: do not wait for them.
            rt.shutdown_timeout(Duration::from_millis(500));
        })
        .map_err(RestError::Thread)?;
    tracing::info!(%addr, "REST API listening");
    Ok(Some(RestServer {
        stop: Some(stop_tx),
        thread: Some(thread),
        addr,
        addr_file,
    }))
}

/// A client must send a request's headers within this (slow clients lose
/// their connection instead of holding it); also how long a kept-alive
/// connection may sit idle between requests.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's body must arrive within this, and be at most `MAX_BODY` bytes.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a response or event stream may wait for a client that reads
/// nothing before its connection is dropped (`write_timeout`).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_BODY: usize = 64 * 1024;
/// Of a body over `MAX_BODY`, how much more is read and dropped before the
/// 413 (see `read_body`).
const DRAIN_MAX: usize = 1 << 20;

/// The accept loop: one task per connection, HTTP/1.1 with a header timeout.
async fn serve(
    listener: tokio::net::TcpListener,
    slots: Arc<tokio::sync::Semaphore>,
    refused: Arc<Refused>,
    app: Router,
) {
    let mut refused_logged: Option<Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait, do not spin.
                tracing::debug!(error = %e, "REST API: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused
                .connections
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if refused_logged.is_none_or(|t| t.elapsed() >= PRESSURE_LOG_EVERY) {
                tracing::warn!(
                    max = MAX_CONNECTIONS,
                    "REST API: too many client connections, refusing more"
                );
                refused_logged = Some(Instant::now());
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let svc = hyper_util::service::TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(
                    hyper_util::rt::TokioIo::new(WriteTimeout::new(stream, WRITE_TIMEOUT)),
                    svc,
                )
                .await;
            drop(slot);
        });
    }
}

type St = AxState<Arc<State>>;

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/conntrack", get(ct_list).delete(ct_delete))
        .route("/api/v1/conntrack/count", get(ct_count))
        .route("/api/v1/conntrack/flush", post(ct_flush))
        .route("/api/v1/conntrack/events", get(ct_events))
        .route("/api/v1/timeouts", get(timeouts_get).put(timeouts_put))
        .route("/api/v1/ports", get(ports))
        .route("/api/v1/nat", get(nat))
        .route("/api/v1/ha", get(ha::status))
        .route("/api/v1/ha/cache", get(ha::cache))
        .route("/api/v1/ha/commit", post(ha::commit))
        .route("/api/v1/ha/resync", post(ha::resync))
        .route("/api/v1/ha/standby", post(ha::standby))
        .route(
            "/api/v1/nat/pools/{pool}/backends/{index}",
            put(backend_health),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// An error response: the status and a JSON `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        r
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "no such endpoint: see /healthz, /metrics, /api/v1/{stats,conntrack,timeouts,ports,nat}"
            .into(),
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint".into(),
    )
}

/// A request's body: at most `MAX_BODY` bytes (413), within `BODY_TIMEOUT`
/// (408), so that a slow or endless body cannot hold a connection.
///
/// An oversized body is read on (and dropped), up to `DRAIN_MAX` more bytes,
/// before the 413 goes out: a socket closed with unread data in it sends a
/// reset, which can reach the client before the response does, and the
/// client then sees a broken connection instead of the 413.
async fn read_body(body: axum::body::Body) -> Result<Bytes, ApiError> {
    let read = async {
        let mut data = body.into_data_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut total = 0usize;
        while let Some(chunk) = data.next().await {
            let chunk = chunk.map_err(|e| bad(format!("the body could not be read: {e}")))?;
            total += chunk.len();
            if total <= MAX_BODY {
                buf.extend_from_slice(&chunk);
            } else if total > MAX_BODY + DRAIN_MAX {
                break;
            }
        }
        if total > MAX_BODY {
            return Err(ApiError(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes"),
            ));
        }
        Ok(Bytes::from(buf))
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(r) => r,
        Err(_) => Err(ApiError(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// Checks the bearer token in constant time.
fn authorize(st: &State, headers: &HeaderMap) -> Result<(), ApiError> {
    let unauthorized = |m: &str| ApiError(StatusCode::UNAUTHORIZED, m.into());
    let Some(v) = headers.get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "this call changes state: send Authorization: Bearer TOKEN ([rest] token or token_file)",
        ));
    };
    let given = v
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(st.token.as_bytes())) {
        Ok(())
    } else {
        Err(unauthorized("wrong bearer token"))
    }
}

fn query_pairs(q: &Option<String>) -> Vec<(String, String)> {
    q.as_deref()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default()
}

fn json_body(body: &Bytes) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(bad("the body must be a JSON object")),
        Err(e) => Err(bad(format!("the body is not valid JSON: {e}"))),
    }
}

async fn healthz(AxState(st): St) -> Json<Value> {
    let (recent, ago) = st.check_pressure();
    let ct = st.ctx.shared.totals().ct;
    let table = st.ctx.shared.engine.table();
    let fill = table.len() as f64 / table.capacity().max(1) as f64;
    let mut warnings = Vec::new();
    if recent {
        warnings.push(format!(
            "conntrack table full: early_drop or insert_failed rose {:.0} s ago (early_drop {}, insert_failed {}); raise [conntrack] max_connections or lower the timeouts",
            ago.unwrap_or(0.0),
            ct.early_drop,
            ct.insert_failed
        ));
    }
    if fill >= 0.9 {
        warnings.push(format!(
            "conntrack table {:.0}% full ({} of {})",
            fill * 100.0,
            table.len(),
            table.capacity()
        ));
    }
    Json(json!({
        "status": if warnings.is_empty() { "ok" } else { "warning" },
        "uptime_s": st.started.elapsed().as_secs(),
        "workers": st.ctx.workers,
        "connections": table.len(),
        "capacity": table.capacity(),
        "table_fill_ratio": fill,
        "early_drop_total": ct.early_drop,
        "insert_failed_total": ct.insert_failed,
        "table_pressure_recent": recent,
        "table_pressure_seconds_ago": ago,
        "warnings": warnings,
    }))
}

fn counters_json(p: &Published) -> Value {
    Value::Object(
        p.ct.fields()
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect(),
    )
}

/// The heavy hitters over all workers: summed per source, largest first.
fn top_sources(per_worker: &[Published]) -> Vec<TopSource> {
    let mut all: Vec<TopSource> = Vec::new();
    for t in per_worker
        .iter()
        .flat_map(|p| p.top_sources.iter())
        .filter(|t| t.new_conns > 0)
    {
        match all
            .iter_mut()
            .find(|a| a.addr == t.addr && a.family == t.family)
        {
            Some(a) => a.new_conns += t.new_conns,
            None => all.push(*t),
        }
    }
    all.sort_by_key(|t| std::cmp::Reverse(t.new_conns));
    all.truncate(TOP_SOURCES);
    all
}

fn port_json(p: &PortView, s: &Snapshot, i: usize) -> Value {
    let n = &p.stats;
    json!({
        "name": p.name,
        "id": p.id,
        "driver": p.driver,
        "mac": p.mac,
        "link_up": p.link_up,
        "speed_mbps": p.speed_mbps,
        "rx_packets": s.totals.rx_per_port[i],
        "tx_packets": s.totals.tx_per_port[i],
        "nic": {
            "ipackets": n.ipackets, "opackets": n.opackets,
            "ibytes": n.ibytes, "obytes": n.obytes,
            "imissed": n.imissed, "ierrors": n.ierrors,
            "oerrors": n.oerrors, "rx_nombuf": n.rx_nombuf,
        },
    })
}

pub(crate) fn backend_name(b: &Backend) -> String {
    let ip = b.addr.to_ip(b.family);
    match (b.port, ip) {
        (Some(p), std::net::IpAddr::V6(a)) => format!("[{a}]:{p}"),
        (Some(p), a) => format!("{a}:{p}"),
        (None, a) => a.to_string(),
    }
}

fn nat_json(st: &State) -> Value {
    let Some(nat) = st.ctx.shared.engine.nat() else {
        return json!({ "rules": [], "pools": [] });
    };
    let rules: Vec<Value> = nat
        .rules
        .iter()
        .map(|r| {
            let kind = match r.action {
                ctcore::nat::Action::Snat { .. } => "snat",
                ctcore::nat::Action::Masquerade { .. } => "masquerade",
                ctcore::nat::Action::Dnat { .. } => "dnat",
                ctcore::nat::Action::DnatPool { .. } => "dnat_pool",
            };
            json!({
                "name": r.name,
                "action": kind,
                "translations": r.hits.get(),
                "out_of_ports": r.out_of_ports.get(),
            })
        })
        .collect();
    let pools: Vec<Value> = nat.pools.iter().map(pool_json).collect();
    json!({ "rules": rules, "pools": pools })
}

fn pool_json(p: &ctcore::nat::Pool) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let backends: Vec<Value> = p
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            json!({
                "index": i,
                "backend": backend_name(b),
                "weight": b.weight,
                "healthy": b.healthy.load(Relaxed),
            })
        })
        .collect();
    let healthy = p
        .backends
        .iter()
        .filter(|b| b.healthy.load(Relaxed))
        .count();
    json!({ "name": p.name, "healthy_backends": healthy, "backends": backends })
}

async fn stats(AxState(st): St) -> Json<Value> {
    let s = Snapshot::take(&st);
    let table = st.ctx.shared.engine.table();
    let nat_ports = st.ctx.shared.nat_ports(None);
    let eim = st.ctx.shared.eim();
    let lcores: Vec<Value> = s
        .lcores
        .iter()
        .zip(&s.ct)
        .zip(&st.ctx.workers)
        .enumerate()
        .map(|(i, ((t, p), lcore))| {
            json!({
                "lcore": lcore,
                "forwarding": t,
                "conntrack": counters_json(p),
                "nat_out_of_ports": p.nat_out_of_ports,
                "nat_ports_in_use": st.ctx.shared.nat_ports(Some(i)).in_use,
                "connections": st.ctx.shared.connections(Some(i)),
            })
        })
        .collect();
    let ports: Vec<Value> = s
        .ports
        .iter()
        .enumerate()
        .map(|(i, p)| port_json(p, &s, i))
        .collect();
    let hitters: Vec<Value> = top_sources(&s.ct)
        .iter()
        .map(|t| json!({ "src": t.addr.to_ip(t.family).to_string(), "new_connections": t.new_conns }))
        .collect();
    let policy: Vec<Value> = st
        .ctx
        .shared
        .policy
        .labels()
        .iter()
        .zip(&s.policy_hits)
        .map(|(r, v)| json!({ "rule": r, "packets": v }))
        .collect();
    Json(json!({
        "uptime_s": st.started.elapsed().as_secs(),
        "totals": s.totals,
        "lcores": lcores,
        "ports": ports,
        "conntrack": {
            // false: a router (`[conntrack] enabled = false`), no table.
            "enabled": st.ctx.shared.enabled,
            "counters": counters_json(&s.ct_total),
            "connections": table.len(),
            "capacity": table.capacity(),
            "table_fill_ratio": table.len() as f64 / table.capacity().max(1) as f64,
            "table_pressure_recent": s.pressure_recent,
            // Where the table's large regions are (`dpdk::huge`): regions
            // the hugetlb pools had no room for are on transparent pages.
            "table_memory": {
                "on_1g_pages_bytes": st.ctx.shared.table_memory.on_1g,
                "on_2m_pages_bytes": st.ctx.shared.table_memory.on_2m,
                "transparent_bytes": st.ctx.shared.table_memory.transparent,
                "regions_refused": st.ctx.shared.table_memory.refused,
            },
            "nat_out_of_ports": s.ct_total.nat_out_of_ports,
            "fragments_held": s.ct_total.frags_held,
            "nat_ports": {
                "in_use": nat_ports.in_use,
                "port_maps": nat_ports.maps,
                "port_map_overflow": nat_ports.overflow,
            },
            "nat_eim": {
                "mappings": eim.mappings,
                "capacity": eim.limit,
                "full": eim.full,
            },
            "gc": { "expired": s.ct_total.ct.expired },
            "verdict_cache": {
                "entries": st.ctx.shared.verdicts.entries(),
                "capacity": crate::verdicts::CAPACITY,
                "full": st.ctx.shared.verdicts.full(),
                "answered": s.ct_total.verdicts_answered,
            },
            "events": {
                "subscribers": st.events.subscribers(),
                "dropped_worker": s.worker_events_dropped,
                "dropped_subscriber": st.events.subscriber_dropped(),
            },
        },
        "heavy_hitters": hitters,
        "policy": policy,
        "nat": nat_json(&st),
    }))
}

async fn metrics_text(AxState(st): St) -> Response {
    let s = Snapshot::take(&st);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        metrics::render(&st, &s),
    )
        .into_response()
}

fn paging(extra: &[(String, String)]) -> Result<(usize, usize), ApiError> {
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0;
    for (k, v) in extra {
        let n: usize = v
            .parse()
            .map_err(|_| bad(format!("{k}={v:?}: not a number")))?;
        match k.as_str() {
            "limit" if (1..=MAX_LIMIT).contains(&n) => limit = n,
            "limit" => return Err(bad(format!("limit: between 1 and {MAX_LIMIT}"))),
            _ => offset = n,
        }
    }
    Ok((limit, offset))
}

async fn ct_list(
    AxState(st): St,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    let (f, extra) = Filter::parse(&query_pairs(&q), &["limit", "offset"]).map_err(bad)?;
    let (limit, offset) = paging(&extra)?;
    let v = tokio::task::spawn_blocking(move || {
        // Like conntrack -L: stripe by stripe, never the whole table locked;
        // only the requested page is copied.
        let now = st.now_ms();
        let mut total = 0usize;
        let mut page = Vec::new();
        st.ctx.shared.engine.snapshot(now, |c| {
            if f.matches(c) {
                if total >= offset && page.len() < limit {
                    page.push(*c);
                }
                total += 1;
            }
        });
        let conns: Vec<Value> = page.iter().map(|c| conn_json(c, now)).collect();
        json!({ "total": total, "offset": offset, "limit": limit, "connections": conns })
    })
    .await
    .map_err(internal)?;
    Ok(Json(v))
}

async fn ct_count(
    AxState(st): St,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    let (f, _) = Filter::parse(&query_pairs(&q), &[]).map_err(bad)?;
    if f.is_empty() {
        return Ok(Json(json!({ "count": st.ctx.shared.engine.table().len() })));
    }
    let n = tokio::task::spawn_blocking(move || {
        let mut n = 0u64;
        st.ctx
            .shared
            .engine
            .snapshot(st.now_ms(), |c| n += f.matches(c) as u64);
        n
    })
    .await
    .map_err(internal)?;
    Ok(Json(json!({ "count": n })))
}

async fn ct_delete(
    AxState(st): St,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    let (f, _) = Filter::parse(&query_pairs(&q), &[]).map_err(bad)?;
    if f.is_empty() {
        return Err(bad(
            "DELETE needs at least one filter (e.g. ?proto=tcp&dport=80); to delete every connection: POST /api/v1/conntrack/flush",
        ));
    }
    let n = tokio::task::spawn_blocking(move || st.delete(&f))
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "deleted": n })))
}

async fn ct_flush(AxState(st): St, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    let n = tokio::task::spawn_blocking(move || st.delete(&Filter::default()))
        .await
        .map_err(internal)?;
    Ok(Json(json!({ "deleted": n })))
}

fn sse_event(e: &Event) -> SseEvent {
    let mut v = conn_json(&e.conn, e.at_ms);
    let tag = e.kind.tag();
    v["type"] = json!(tag.trim_matches(|c| c == '[' || c == ']'));
    v["at_ms"] = json!(e.at_ms);
    v["line"] = json!(format!(
        "{tag:>9} {}",
        v["line"].as_str().unwrap_or_default()
    ));
    SseEvent::default()
        .event(v["type"].as_str().unwrap_or("event").to_ascii_lowercase())
        .data(v.to_string())
}

async fn ct_events(
    AxState(st): St,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let (f, _) = Filter::parse(&query_pairs(&q), &[]).map_err(bad)?;
    let Some((rx, sub)) = st.events.subscribe(&st.ctx.shared, st.max_subscribers) else {
        st.refused
            .subscribers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} event streams are open, the most [rest] max_subscribers allows: close one, or raise it",
                st.max_subscribers
            ),
        ));
    };
    let hello = tokio_stream::once(Ok::<_, std::convert::Infallible>(
        SseEvent::default().comment("subscribed"),
    ));
    let stream = BroadcastStream::new(rx).filter_map(move |r| match r {
        Ok(e) => f.matches(&e.conn).then(|| Ok(sse_event(&e))),
        Err(BroadcastStreamRecvError::Lagged(n)) => {
            sub.lost(n);
            Some(Ok(SseEvent::default()
                .event("dropped")
                .data(json!({ "dropped": n }).to_string())))
        }
    });
    Ok(Sse::new(hello.chain(stream))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn timeouts_json(st: &State) -> Value {
    let mut tun = st.ctx.shared.engine.tunables();
    let mut m = Map::new();
    for name in crate::config::conntrack::TIMEOUT_NAMES {
        let ms =
            *crate::config::conntrack::timeout_slot(&mut tun.timeouts, name).expect("listed name");
        m.insert(name.into(), json!(ms / 1000));
    }
    m.insert("checksum".into(), json!(tun.checksum as u8));
    m.insert("tcp_loose".into(), json!(tun.tcp.loose as u8));
    m.insert("tcp_be_liberal".into(), json!(tun.tcp.be_liberal as u8));
    m.insert("tcp_max_retrans".into(), json!(tun.tcp.max_retrans));
    m.insert(
        "tcp_ignore_invalid_rst".into(),
        json!(tun.tcp.ignore_invalid_rst as u8),
    );
    Value::Object(m)
}

async fn timeouts_get(AxState(st): St) -> Json<Value> {
    Json(timeouts_json(&st))
}

async fn timeouts_put(
    AxState(st): St,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    let m = json_body(&read_body(body).await?)?;
    let mut tun = st.ctx.shared.engine.tunables();
    for (k, v) in &m {
        let n = v.as_u64().ok_or_else(|| {
            bad(format!(
                "{k}: a non-negative whole number (seconds, or 0/1 for switches)"
            ))
        })?;
        let switch = |n: u64| match n {
            0 | 1 => Ok(n == 1),
            _ => Err(bad(format!("{k}: 0 or 1"))),
        };
        match k.as_str() {
            "checksum" => tun.checksum = switch(n)?,
            "tcp_loose" => tun.tcp.loose = switch(n)?,
            "tcp_be_liberal" => tun.tcp.be_liberal = switch(n)?,
            "tcp_ignore_invalid_rst" => tun.tcp.ignore_invalid_rst = switch(n)?,
            "tcp_max_retrans" => {
                tun.tcp.max_retrans = u8::try_from(n).map_err(|_| bad(format!("{k}: 0..255")))?
            }
            name => {
                let slot = crate::config::conntrack::timeout_slot(&mut tun.timeouts, name).ok_or_else(|| {
                    bad(format!(
                        "unknown setting {name:?}: use {}, checksum, tcp_loose, tcp_be_liberal, tcp_max_retrans, tcp_ignore_invalid_rst",
                        crate::config::conntrack::TIMEOUT_NAMES.join(", ")
                    ))
                })?;
                if n == 0 || n > 100 * 365 * 86_400 {
                    return Err(bad(format!("{name}: between 1 s and 100 years")));
                }
                *slot = n * 1000;
            }
        }
    }
    st.ctx.shared.engine.set_tunables(tun);
    tracing::info!(changed = ?m.keys().collect::<Vec<_>>(), "conntrack settings changed through the REST API");
    Ok(Json(timeouts_json(&st)))
}

async fn ports(AxState(st): St) -> Json<Value> {
    let s = Snapshot::take(&st);
    let dev = st.ctx.ports.read().unwrap_or_else(|e| e.into_inner());
    let v: Vec<Value> = s
        .ports
        .iter()
        .zip(&st.ctx.port_devices)
        .enumerate()
        .map(|(i, (p, &(d, vlan)))| {
            let mut j = port_json(p, &s, i);
            let x: Map<String, Value> = match dev.get(d) {
                Some(d) if vlan == 0 => {
                    d.xstats().into_iter().map(|(k, v)| (k, json!(v))).collect()
                }
                _ => Map::new(),
            };
            j["xstats"] = Value::Object(x);
            j
        })
        .collect();
    Json(Value::Array(v))
}

async fn nat(AxState(st): St) -> Json<Value> {
    Json(nat_json(&st))
}

async fn backend_health(
    AxState(st): St,
    headers: HeaderMap,
    Path((pool, index)): Path<(String, String)>,
    body: axum::body::Body,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    let m = json_body(&read_body(body).await?)?;
    let healthy = match (m.get("healthy"), m.len()) {
        (Some(Value::Bool(b)), 1) => *b,
        _ => return Err(bad(r#"the body must be {"healthy": true|false}"#)),
    };
    let not_found = |m: String| ApiError(StatusCode::NOT_FOUND, m);
    let p = st
        .ctx
        .shared
        .engine
        .nat()
        .and_then(|n| n.pools.iter().find(|p| p.name == pool))
        .ok_or_else(|| not_found(format!("no pool named {pool:?}")))?;
    let i: usize = index
        .parse()
        .map_err(|_| bad(format!("backend index {index:?} is not a number")))?;
    if !p.set_healthy(i, healthy) {
        return Err(not_found(format!(
            "pool {pool:?} has {} backends (index from 0)",
            p.backends.len()
        )));
    }
    tracing::info!(pool = %pool, backend = i, healthy, "backend health changed through the REST API");
    Ok(Json(pool_json(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_config_validation() {
        assert!(RestConfig::default().validate().is_ok());
        let bad_bind = RestConfig {
            bind: Some("localhost".into()),
            ..RestConfig::default()
        };
        assert!(bad_bind.validate().is_err());
        let short = RestConfig {
            token: Some("abc".into()),
            ..RestConfig::default()
        };
        assert!(short.validate().is_err());
    }

    #[test]
    fn token_file_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ctgate-rest-token-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let cfg = RestConfig {
            token_file: Some(dir.join("sub/token")),
            ..RestConfig::default()
        };
        let a = load_token(&cfg).unwrap();
        let b = load_token(&cfg).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 48);
        let mode = std::fs::metadata(dir.join("sub/token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn heavy_hitters_merge_workers() {
        use crate::top_sources::TopSources;
        use ctcore::tuple::{Addr, Family};
        let (mut ta, mut tb) = (TopSources::default(), TopSources::default());
        let x = Addr::from_v4([192, 0, 2, 2]);
        let y = Addr::from_v4([192, 0, 2, 3]);
        for _ in 0..5 {
            ta.note(Family::V4, x);
        }
        for _ in 0..3 {
            tb.note(Family::V4, x);
            tb.note(Family::V4, y);
        }
        let a = Published {
            top_sources: ta.entries(),
            ..Published::default()
        };
        let b = Published {
            top_sources: tb.entries(),
            ..Published::default()
        };
        let top = top_sources(&[a, b]);
        assert_eq!(top.len(), 2);
        assert_eq!((top[0].addr, top[0].new_conns), (x, 8));
        assert_eq!((top[1].addr, top[1].new_conns), (y, 3));
    }
}

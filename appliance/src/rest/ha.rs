//! `/api/v1/ha`: the sync's state and counters, the external cache (what the
//! peer reported, like `conntrackd -e`), the takeover (`conntrackd -c`) and a
//! resync request (`conntrackd -n`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

use super::filter::{conn_json, Filter};
use super::{authorize, bad, internal, paging, query_pairs, ApiError, St, State};
use crate::ha::Ha;

fn ha(st: &State) -> Result<Arc<Ha>, ApiError> {
    st.ctx.ha.clone().ok_or_else(|| {
        ApiError(
            StatusCode::CONFLICT,
            "state sync is off: configure [sync] (see README, High availability)".into(),
        )
    })
}

/// The sync's state and counters, as JSON.
pub fn status_json(ha: &Ha, standby: bool, now_ms: u64) -> Value {
    let c = &ha.counters;
    let heard = ha.last_heard_ms.load(Relaxed);
    let p = *ha.protocol.lock().unwrap_or_else(|e| e.into_inner());
    let cache = ha.cache.lock().unwrap_or_else(|e| e.into_inner());
    json!({
        "state": if standby { "standby" } else { "active" },
        "role": ha.cfg.role,
        "mode": ha.cfg.mode,
        "bind": ha.cfg.bind,
        "peer": ha.cfg.peer,
        "takeover": ha.cfg.takeover,
        "peer_alive": ha.peer_alive.load(Relaxed),
        "last_heard_ms_ago": (heard > 0).then(|| now_ms.saturating_sub(heard)),
        "external_cache": cache.entries.len(),
        "external_cache_limit": cache.limit,
        "takeovers": ha.takeovers.load(Relaxed),
        "committed": ha.committed_total.load(Relaxed),
        "resend_queue": p.resend_queue,
        "unacked_connections": p.unacked_conns,
        "transmit_queue": p.transmit_queue,
        "counters": {
            "sent": p.counters.sent,
            "received": p.counters.received,
            "retransmitted": p.counters.retransmitted,
            "lost": p.counters.lost,
            "gaps": p.counters.gaps,
            "duplicates": p.counters.duplicates,
            "resyncs": p.counters.resyncs,
            "resyncs_requested": p.counters.resyncs_requested,
            "malformed": p.counters.malformed,
            "alive_timeouts": p.counters.alive_timeouts,
            "datagrams_sent": p.counters.datagrams_sent,
            "datagrams_received": c.datagrams_received.load(Relaxed),
            "events_lost": c.events_lost.load(Relaxed),
            "cache_full": c.cache_full.load(Relaxed),
            "rate_limited": c.rate_limited.load(Relaxed),
            "send_errors": c.send_errors.load(Relaxed),
        },
    })
}

/// Open like /api/v1/stats: no connection data.
pub async fn status(AxState(st): St) -> Result<Json<Value>, ApiError> {
    let ha = ha(&st)?;
    let standby = st.ctx.shared.standby.load(Relaxed);
    Ok(Json(status_json(&ha, standby, st.now_ms())))
}

/// The external cache, listed like the table (`?limit`, `?offset` and the
/// table's filters).
pub async fn cache(
    AxState(st): St,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    let ha = ha(&st)?;
    let (f, extra) = Filter::parse(&query_pairs(&q), &["limit", "offset"]).map_err(bad)?;
    let (limit, offset) = paging(&extra)?;
    let now = st.now_ms();
    let v = tokio::task::spawn_blocking(move || {
        let cache = ha.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = cache
            .entries
            .values()
            .filter_map(|e| {
                // As it would be committed now (its timeout counted down).
                let mut l = e.learnt;
                l.timeout_ms = l.timeout_ms.saturating_sub(now.saturating_sub(e.at_ms));
                l.to_conn(now).ok().filter(|c| f.matches(c))
            })
            .collect();
        drop(cache);
        let total = all.len();
        all.sort_by_key(|c| {
            let t = &c.tuples[0];
            (
                t.family as u8,
                t.proto,
                t.src,
                t.dst,
                t.src_port,
                t.dst_port,
                t.zone,
            )
        });
        let conns: Vec<Value> = all
            .iter()
            .skip(offset)
            .take(limit)
            .map(|c| {
                let l = ctcore::conn::Listed {
                    conn: *c,
                    ext: None,
                };
                conn_json(&l, now)
            })
            .collect();
        json!({ "total": total, "offset": offset, "limit": limit, "connections": conns })
    })
    .await
    .map_err(internal)?;
    Ok(Json(v))
}

/// Takeover: the external cache into the table.
pub async fn commit(AxState(st): St, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    let ha = ha(&st)?;
    let now = st.now_ms();
    let r = tokio::task::spawn_blocking(move || ha.commit(&st.ctx.shared, &st.events, now))
        .await
        .map_err(internal)?;
    Ok(Json(json!(r)))
}

/// Asks the peer for its whole table (FTFW resync request).
pub async fn resync(AxState(st): St, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    let ha = ha(&st)?;
    ha.resync_wanted.store(true, Relaxed);
    Ok(Json(json!({ "requested": true })))
}

/// Back to standby (what keepalived's notify_backup runs).
pub async fn standby(AxState(st): St, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    authorize(&st, &headers)?;
    let ha = ha(&st)?;
    ha.standby(&st.ctx.shared);
    Ok(Json(json!({ "state": "standby" })))
}

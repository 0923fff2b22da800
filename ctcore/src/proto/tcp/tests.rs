use super::*;
use crate::conn::Status;
use crate::tuple::Dir;
use crate::wire::tcp_flags::{ACK, CWR, ECE, FIN, PSH, RST, SYN, URG};
use proptest::prelude::*;

const SECS: u64 = 1000;

fn info(flags: u8, seq: u32, ack: u32, window: u16, payload_len: u16) -> TcpInfo {
    TcpInfo {
        src_port: 40000,
        dst_port: 80,
        seq,
        ack,
        flags,
        window,
        header_len: 20,
        payload_len,
        options: (0, 0),
    }
}

fn seg(info: TcpInfo) -> TcpSegment<'static> {
    TcpSegment { info, options: &[] }
}

fn seg_opts(mut info: TcpInfo, options: &'static [u8]) -> TcpSegment<'static> {
    info.header_len = 20 + options.len() as u8;
    TcpSegment { info, options }
}

/// The engine's side of nf_conntrack_in around one tracked connection.
struct Conn {
    st: TcpState,
    status: Status,
    cfg: TcpConfig,
    t: Timeouts,
}

impl Conn {
    fn open(first: &TcpSegment<'_>, cfg: TcpConfig, t: Timeouts) -> (Conn, TcpOutcome) {
        let st = TcpState::new(first, &cfg).expect("tcp_new accepts");
        let mut c = Conn {
            st,
            status: Status::default(),
            cfg,
            t,
        };
        let out = c.send(Dir::Orig, first);
        (c, out)
    }

    fn send(&mut self, dir: Dir, s: &TcpSegment<'_>) -> TcpOutcome {
        let out = self.st.packet(dir, s, &mut self.status, &self.cfg, &self.t);
        let accepted = matches!(
            out,
            TcpOutcome::Accept { .. } | TcpOutcome::AcceptAndKill | TcpOutcome::Ignore
        );
        if accepted && dir == Dir::Reply {
            self.status.set(Status::SEEN_REPLY);
        }
        out
    }

    fn assured(&self) -> bool {
        self.status.has(Status::ASSURED)
    }
}

fn accept(ms: u64) -> TcpOutcome {
    TcpOutcome::Accept { timeout_ms: ms }
}

const C_ISN: u32 = 1000;
const S_ISN: u32 = 5000;

/// SYN, SYN/ACK, ACK with ISNs C_ISN / S_ISN, window 65535, no options.
fn established(cfg: TcpConfig, t: Timeouts) -> Conn {
    let (mut c, out) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), cfg, t);
    assert_eq!(out, accept(t.tcp_syn_sent_ms));
    assert_eq!(
        c.send(
            Dir::Reply,
            &seg(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0))
        ),
        accept(t.tcp_syn_recv_ms)
    );
    assert_eq!(
        c.send(Dir::Orig, &seg(info(ACK, C_ISN + 1, S_ISN + 1, 65535, 0))),
        accept(t.tcp_established_ms)
    );
    assert_eq!(c.st.state, TcpConntrack::Established);
    c
}

#[test]
fn handshake_data_and_fin_teardown() {
    let t = Timeouts::default();
    let (mut c, out) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
    assert_eq!(out, accept(120 * SECS));
    assert_eq!(c.st.state, TcpConntrack::SynSent);
    assert!(!c.assured());

    let out = c.send(
        Dir::Reply,
        &seg(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0)),
    );
    assert_eq!(out, accept(60 * SECS));
    assert_eq!(c.st.state, TcpConntrack::SynRecv);
    assert!(!c.assured(), "ASSURED needs the handshake's last ACK");

    let out = c.send(Dir::Orig, &seg(info(ACK, C_ISN + 1, S_ISN + 1, 65535, 0)));
    assert_eq!(out, accept(5 * 24 * 3600 * SECS));
    assert_eq!(c.st.state, TcpConntrack::Established);
    assert!(c.assured());

    // Unacked data: the UNACK timeout caps ESTABLISHED.
    let out = c.send(
        Dir::Orig,
        &seg(info(ACK | PSH, C_ISN + 1, S_ISN + 1, 65535, 100)),
    );
    assert_eq!(out, accept(t.tcp_unack_ms));
    assert_ne!(c.st.seen[0].flags & TcpPeer::FLAG_DATA_UNACKNOWLEDGED, 0);
    let out = c.send(
        Dir::Reply,
        &seg(info(ACK, S_ISN + 1, C_ISN + 101, 65535, 0)),
    );
    assert_eq!(out, accept(t.tcp_established_ms));
    assert_eq!(c.st.seen[0].flags & TcpPeer::FLAG_DATA_UNACKNOWLEDGED, 0);

    let out = c.send(
        Dir::Orig,
        &seg(info(FIN | ACK, C_ISN + 101, S_ISN + 1, 65535, 0)),
    );
    assert_eq!(out, accept(t.tcp_fin_wait_ms));
    assert_eq!(c.st.state, TcpConntrack::FinWait);
    assert_ne!(c.st.seen[0].flags & TcpPeer::FLAG_CLOSE_INIT, 0);

    let out = c.send(
        Dir::Reply,
        &seg(info(ACK, S_ISN + 1, C_ISN + 102, 65535, 0)),
    );
    assert_eq!(out, accept(t.tcp_close_wait_ms));
    assert_eq!(c.st.state, TcpConntrack::CloseWait);

    let out = c.send(
        Dir::Reply,
        &seg(info(FIN | ACK, S_ISN + 1, C_ISN + 102, 65535, 0)),
    );
    assert_eq!(out, accept(t.tcp_last_ack_ms));
    assert_eq!(c.st.state, TcpConntrack::LastAck);

    let out = c.send(Dir::Orig, &seg(info(ACK, C_ISN + 102, S_ISN + 2, 65535, 0)));
    assert_eq!(out, accept(t.tcp_time_wait_ms));
    assert_eq!(c.st.state, TcpConntrack::TimeWait);
    assert_eq!(c.st.state.name(), "TIME_WAIT");
}

#[test]
fn first_reply_packet_sees_no_seen_reply() {
    // Engine sets SEEN_REPLY after packet(): a SYN/ACK with SEEN_REPLY
    // already set would be an engine bug, but ASSURED must still wait for
    // a SYN_RECV/ESTABLISHED -> ESTABLISHED transition.
    let t = Timeouts::default();
    let (mut c, _) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
    c.send(
        Dir::Reply,
        &seg(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0)),
    );
    assert!(c.status.has(Status::SEEN_REPLY));
    assert!(!c.assured());
}

#[test]
fn syn_retransmit_without_reply_does_not_refresh() {
    let t = Timeouts::default();
    let syn = seg(info(SYN, C_ISN, 0, 65535, 0));
    let (mut c, _) = Conn::open(&syn, TcpConfig::default(), t);
    assert_eq!(c.send(Dir::Orig, &syn), TcpOutcome::Ignore);
    assert_eq!(c.st.state, TcpConntrack::SynSent);
}

#[test]
fn rst_before_any_reply_kills() {
    let t = Timeouts::default();
    let (mut c, _) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
    let out = c.send(Dir::Reply, &seg(info(RST | ACK, 0, C_ISN + 1, 0, 0)));
    assert_eq!(out, TcpOutcome::AcceptAndKill);
    assert_eq!(c.st.state, TcpConntrack::Close);
}

#[test]
fn rst_exact_on_established_closes() {
    let t = Timeouts::default();
    let mut c = established(TcpConfig::default(), t);
    let out = c.send(Dir::Orig, &seg(info(RST, C_ISN + 1, 0, 0, 0)));
    assert_eq!(out, accept(t.tcp_close_ms));
    assert_eq!(c.st.state, TcpConntrack::Close);
}

#[test]
fn rst_below_maxack_is_invalid_unless_ignored() {
    let t = Timeouts::default();
    let mut c = established(TcpConfig::default(), t);
    let before = c.st;
    let rst = seg(info(RST, C_ISN - 10, 0, 0, 0));
    assert_eq!(c.send(Dir::Orig, &rst), TcpOutcome::Invalid("invalid rst"));
    assert_eq!(c.st, before);

    let cfg = TcpConfig {
        ignore_invalid_rst: true,
        ..TcpConfig::default()
    };
    let mut c = established(cfg, t);
    // Not the exact sequence: state kept for a possible challenge ACK, but
    // the RST still sets the CLOSE timeout.
    assert_eq!(c.send(Dir::Orig, &rst), accept(t.tcp_close_ms));
    assert_eq!(c.st.state, TcpConntrack::Established);
}

#[test]
fn rst_in_window_but_inexact_keeps_state() {
    let t = Timeouts::default();
    let mut c = established(TcpConfig::default(), t);
    let out = c.send(Dir::Orig, &seg(info(RST, C_ISN + 500, 0, 0, 0)));
    assert_eq!(out, accept(t.tcp_close_ms));
    assert_eq!(c.st.state, TcpConntrack::Established);
    // The exact one then closes.
    let out = c.send(Dir::Orig, &seg(info(RST, C_ISN + 1, 0, 0, 0)));
    assert_eq!(out, accept(t.tcp_close_ms));
    assert_eq!(c.st.state, TcpConntrack::Close);
}

#[test]
fn rst_after_data_train_closes() {
    let t = Timeouts::default();
    let mut c = established(TcpConfig::default(), t);
    c.send(
        Dir::Reply,
        &seg(info(ACK | PSH, S_ISN + 1, C_ISN + 1, 65535, 19)),
    );
    let out = c.send(
        Dir::Reply,
        &seg(info(RST | ACK, S_ISN + 20, C_ISN + 1, 0, 0)),
    );
    assert_eq!(out, accept(t.tcp_close_ms));
    assert_eq!(c.st.state, TcpConntrack::Close);
}

#[test]
fn simultaneous_open() {
    let t = Timeouts::default();
    let (mut c, _) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
    // Reply SYN: SYN_SENT2; still no reply seen while it is processed, and
    // the table's old state is SYN_SENT, so no refresh.
    assert_eq!(
        c.send(Dir::Reply, &seg(info(SYN, S_ISN, 0, 65535, 0))),
        TcpOutcome::Ignore
    );
    assert_eq!(c.st.state, TcpConntrack::SynSent2);
    assert_ne!(c.st.last_flags & TcpState::SIMULTANEOUS_OPEN, 0);

    let out = c.send(Dir::Orig, &seg(info(SYN | ACK, C_ISN, S_ISN + 1, 65535, 0)));
    assert_eq!(out, accept(t.tcp_syn_recv_ms));
    assert_eq!(c.st.state, TcpConntrack::SynRecv);
    // The reply's own SYN/ACK is ignored in SYN_RECV.
    assert_eq!(
        c.send(
            Dir::Reply,
            &seg(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0))
        ),
        TcpOutcome::Ignore
    );
    assert_eq!(c.st.state, TcpConntrack::SynRecv);
    // A reply ACK completes a simultaneous open.
    let out = c.send(Dir::Reply, &seg(info(ACK, S_ISN + 1, C_ISN + 1, 65535, 0)));
    assert_eq!(out, accept(t.tcp_established_ms));
    assert_eq!(c.st.state, TcpConntrack::Established);
    assert!(c.assured());
}

#[test]
fn out_of_window_is_invalid_or_liberal() {
    let t = Timeouts::default();
    let far = seg(info(ACK, C_ISN + 10_000_000, S_ISN + 1, 65535, 10));
    let mut c = established(TcpConfig::default(), t);
    let before = c.st;
    assert!(
        matches!(c.send(Dir::Orig, &far), TcpOutcome::Invalid(r) if r.starts_with("SEQ is over"))
    );
    assert_eq!(c.st, before);
    // ACK for data never sent.
    let bad_ack = seg(info(ACK, C_ISN + 1, S_ISN + 100_000, 65535, 0));
    assert!(
        matches!(c.send(Dir::Orig, &bad_ack), TcpOutcome::Invalid(r) if r.starts_with("ACK is over"))
    );

    let mut c = established(
        TcpConfig {
            be_liberal: true,
            ..TcpConfig::default()
        },
        t,
    );
    assert_eq!(c.send(Dir::Orig, &far), accept(t.tcp_established_ms));
}

#[test]
fn old_retransmission_is_ignored() {
    let t = Timeouts::default();
    let mut c = established(TcpConfig::default(), t);
    // Data far below what the receiver window allows any more.
    c.send(
        Dir::Orig,
        &seg(info(ACK, C_ISN + 1, S_ISN + 1, 65535, 1000)),
    );
    c.send(
        Dir::Reply,
        &seg(info(ACK, S_ISN + 1, C_ISN + 1001, 65535, 0)),
    );
    let old = seg(info(ACK, C_ISN.wrapping_sub(200_000), S_ISN + 1, 65535, 10));
    assert_eq!(c.send(Dir::Orig, &old), TcpOutcome::Ignore);
}

#[test]
fn invalid_fin_rst_exchange_lowers_timeout() {
    let t = Timeouts::default();
    let mut c = established(TcpConfig::default(), t);
    let fin = seg(info(FIN | ACK, C_ISN + 50_000_000, S_ISN + 1, 65535, 0));
    assert!(matches!(c.send(Dir::Orig, &fin), TcpOutcome::Invalid(_)));
    assert_eq!(
        (c.st.last_index, c.st.last_dir),
        (TcpIndex::Fin, Dir::Orig as u8)
    );
    let rst = seg(info(RST, S_ISN + 50_000_000, 0, 0, 0));
    match c.send(Dir::Reply, &rst) {
        TcpOutcome::InvalidLowerTimeout { timeout_ms, .. } => {
            assert_eq!(timeout_ms, t.tcp_unack_ms)
        }
        other => panic!("expected InvalidLowerTimeout, got {other:?}"),
    }
    // Not ASSURED: nothing to lower.
    let (mut c, _) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
    c.send(
        Dir::Reply,
        &seg(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0)),
    );
    assert!(matches!(c.send(Dir::Orig, &fin), TcpOutcome::Invalid(_)));
}

fn teardown(c: &mut Conn) {
    c.send(
        Dir::Orig,
        &seg(info(FIN | ACK, C_ISN + 1, S_ISN + 1, 65535, 0)),
    );
    c.send(
        Dir::Reply,
        &seg(info(FIN | ACK, S_ISN + 1, C_ISN + 2, 65535, 0)),
    );
    c.send(Dir::Orig, &seg(info(ACK, C_ISN + 2, S_ISN + 2, 65535, 0)));
    assert_eq!(c.st.state, TcpConntrack::TimeWait);
}

#[test]
fn syn_in_time_wait_repeats() {
    let t = Timeouts::default();
    let mut c = established(TcpConfig::default(), t);
    teardown(&mut c);
    let syn = seg(info(SYN, C_ISN + 100_000, 0, 65535, 0));
    assert_eq!(c.send(Dir::Orig, &syn), TcpOutcome::Repeat);
    // The engine then starts afresh from that SYN.
    let (c2, out) = Conn::open(&syn, TcpConfig::default(), t);
    assert_eq!(out, accept(t.tcp_syn_sent_ms));
    assert_eq!(c2.st.state, TcpConntrack::SynSent);
    // A reply-direction SYN in TIME_WAIT (role switch) repeats as well.
    assert_eq!(
        c.send(Dir::Reply, &seg(info(SYN, 77, 0, 65535, 0))),
        TcpOutcome::Repeat
    );
}

#[test]
fn syn_after_own_rst_repeats() {
    let t = Timeouts::default();
    let mut c = established(TcpConfig::default(), t);
    assert_eq!(
        c.send(Dir::Orig, &seg(info(RST, C_ISN + 1, 0, 0, 0))),
        accept(t.tcp_close_ms)
    );
    let syn = seg(info(SYN, 9_999, 0, 65535, 0));
    assert_eq!(c.send(Dir::Orig, &syn), TcpOutcome::Repeat);
}

#[test]
fn syn_after_peer_rst_is_ignored_then_resyncs() {
    let t = Timeouts::default();
    let mut c = established(TcpConfig::default(), t);
    assert_eq!(
        c.send(Dir::Reply, &seg(info(RST, S_ISN + 1, 0, 0, 0))),
        accept(t.tcp_close_ms)
    );
    assert_eq!(c.st.state, TcpConntrack::Close);
    const NEW_ISN: u32 = 777_777;
    const WS: &[u8] = &[3, 3, 7, 0];
    let syn = seg_opts(info(SYN, NEW_ISN, 0, 29200, 0), WS);
    assert_eq!(c.send(Dir::Orig, &syn), TcpOutcome::Ignore);
    assert_eq!(c.st.state, TcpConntrack::Close);
    assert_eq!(
        (c.st.last_index, c.st.last_end, c.st.last_wscale),
        (TcpIndex::Syn, NEW_ISN + 1, 7)
    );
    // The server answers that SYN: we resync to SYN_RECV from it.
    let synack = seg_opts(info(SYN | ACK, 3333, NEW_ISN + 1, 28960, 0), WS);
    assert_eq!(c.send(Dir::Reply, &synack), accept(t.tcp_syn_recv_ms));
    assert_eq!(c.st.state, TcpConntrack::SynRecv);
    assert_eq!(c.st.seen[0].td_end, NEW_ISN + 1);
    assert_eq!((c.st.seen[0].td_scale, c.st.seen[1].td_scale), (7, 7));
    let out = c.send(Dir::Orig, &seg(info(ACK, NEW_ISN + 1, 3334, 229, 0)));
    assert_eq!(out, accept(t.tcp_established_ms));
}

#[test]
fn window_scale_needs_both_sides() {
    let t = Timeouts::default();
    const WS7: &[u8] = &[1, 3, 3, 7];
    let (mut c, _) = Conn::open(
        &seg_opts(info(SYN, C_ISN, 0, 65535, 0), WS7),
        TcpConfig::default(),
        t,
    );
    assert_eq!(c.st.seen[0].td_scale, 7);
    c.send(
        Dir::Reply,
        &seg(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0)),
    );
    assert_eq!((c.st.seen[0].td_scale, c.st.seen[1].td_scale), (0, 0));

    let (mut c, _) = Conn::open(
        &seg_opts(info(SYN, C_ISN, 0, 65535, 0), WS7),
        TcpConfig::default(),
        t,
    );
    const WS20: &[u8] = &[1, 3, 3, 20];
    c.send(
        Dir::Reply,
        &seg_opts(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0), WS20),
    );
    // Clamped to TCP_MAX_WSCALE.
    assert_eq!((c.st.seen[0].td_scale, c.st.seen[1].td_scale), (7, 14));
    c.send(Dir::Orig, &seg(info(ACK, C_ISN + 1, S_ISN + 1, 512, 0)));
    // Scaled window: 512 << 7 counts, so data that far ahead is in window.
    let out = c.send(
        Dir::Reply,
        &seg(info(ACK | PSH, S_ISN + 1, C_ISN + 1, 16, 60_000)),
    );
    assert!(matches!(out, TcpOutcome::Accept { .. }), "{out:?}");
}

#[test]
fn sack_extends_ack() {
    let t = Timeouts::default();
    const SACK_PERM: &[u8] = &[1, 1, 4, 2];
    let (mut c, _) = Conn::open(
        &seg_opts(info(SYN, C_ISN, 0, 65535, 0), SACK_PERM),
        TcpConfig::default(),
        t,
    );
    c.send(
        Dir::Reply,
        &seg_opts(info(SYN | ACK, S_ISN, C_ISN + 1, 65535, 0), SACK_PERM),
    );
    c.send(Dir::Orig, &seg(info(ACK, C_ISN + 1, S_ISN + 1, 65535, 0)));
    c.send(
        Dir::Orig,
        &seg(info(ACK, C_ISN + 1, S_ISN + 1, 65535, 3000)),
    );
    // SACK block right edge beyond anything sent: over the upper bound.
    const SACK_BAD: &[u8] = &[1, 1, 5, 10, 0, 0, 0x13, 0x89, 0, 0x10, 0, 0];
    let out = c.send(
        Dir::Reply,
        &seg_opts(info(ACK, S_ISN + 1, C_ISN + 1, 65535, 0), SACK_BAD),
    );
    assert!(
        matches!(out, TcpOutcome::Invalid(r) if r.starts_with("ACK is over")),
        "{out:?}"
    );
    // A right edge within what was sent is fine.
    let right = (C_ISN + 2001).to_be_bytes();
    let left = (C_ISN + 1001).to_be_bytes();
    let ok: &'static [u8] = Box::leak(
        [&[1u8, 1, 5, 10][..], &left[..], &right[..]]
            .concat()
            .into_boxed_slice(),
    );
    let out = c.send(
        Dir::Reply,
        &seg_opts(info(ACK, S_ISN + 1, C_ISN + 1, 65535, 0), ok),
    );
    assert!(matches!(out, TcpOutcome::Accept { .. }), "{out:?}");
}

#[test]
fn mid_stream_pickup() {
    let t = Timeouts::default();
    let ack = seg(info(ACK | PSH, 123_456, 654_321, 1000, 100));
    assert!(TcpState::new(
        &ack,
        &TcpConfig {
            loose: false,
            ..TcpConfig::default()
        }
    )
    .is_err());

    let (mut c, out) = Conn::open(&ack, TcpConfig::default(), t);
    // ESTABLISHED but no reply yet: at most the UNACK timeout.
    assert_eq!(out, accept(t.tcp_unack_ms));
    assert_eq!(c.st.state, TcpConntrack::Established);
    let liberal = TcpPeer::FLAG_BE_LIBERAL | TcpPeer::FLAG_SACK_PERM;
    assert_eq!(c.st.seen[1].flags & liberal, liberal);
    // First reply: still processed without SEEN_REPLY.
    let out = c.send(Dir::Reply, &seg(info(ACK, 654_321, 123_556, 1000, 0)));
    assert_eq!(out, accept(t.tcp_unack_ms));
    assert!(!c.assured());
    // Next packet: ESTABLISHED -> ESTABLISHED with a reply seen.
    let out = c.send(Dir::Orig, &seg(info(ACK, 123_556, 654_321, 1000, 0)));
    assert_eq!(out, accept(t.tcp_established_ms));
    assert!(c.assured());
    // Liberal: nonsense sequence numbers still pass.
    let out = c.send(Dir::Orig, &seg(info(ACK, 9, 9, 1000, 0)));
    assert!(matches!(out, TcpOutcome::Accept { .. }));
}

#[test]
fn only_syn_or_ack_start_connections() {
    let cfg = TcpConfig::default();
    for flags in [SYN | ACK, FIN | ACK, RST, RST | ACK] {
        assert_eq!(
            TcpState::new(&seg(info(flags, 1, 1, 100, 0)), &cfg),
            Err("invalid new"),
            "{flags:#x}"
        );
    }
    assert_eq!(
        TcpState::new(&seg(info(SYN | FIN, 1, 0, 100, 0)), &cfg),
        Err("invalid tcp flag combination")
    );
}

#[test]
fn retransmissions_switch_to_retrans_timeout() {
    let t = Timeouts {
        tcp_retrans_ms: 200 * SECS,
        tcp_unack_ms: 250 * SECS,
        ..Timeouts::default()
    };
    let cfg = TcpConfig::default();
    let mut c = established(cfg, t);
    let data = seg(info(ACK | PSH, C_ISN + 1, S_ISN + 1, 65535, 500));
    assert_eq!(c.send(Dir::Orig, &data), accept(t.tcp_unack_ms));
    for n in 1..cfg.max_retrans {
        assert_eq!(c.send(Dir::Orig, &data), accept(t.tcp_unack_ms));
        assert_eq!(c.st.retrans, n);
    }
    assert_eq!(c.send(Dir::Orig, &data), accept(t.tcp_retrans_ms));
    assert_eq!(c.st.retrans, cfg.max_retrans);
    // An ACK for it resets the count.
    let out = c.send(
        Dir::Reply,
        &seg(info(ACK, S_ISN + 1, C_ISN + 501, 65535, 0)),
    );
    assert_eq!(out, accept(t.tcp_established_ms));
    assert_eq!(c.st.retrans, 0);
}

#[test]
fn zero_window_uses_retrans_timeout() {
    let t = Timeouts {
        tcp_retrans_ms: 200 * SECS,
        ..Timeouts::default()
    };
    let mut c = established(TcpConfig::default(), t);
    let out = c.send(Dir::Reply, &seg(info(ACK, S_ISN + 1, C_ISN + 1, 0, 0)));
    assert_eq!(out, accept(t.tcp_retrans_ms));
}

#[test]
fn challenge_ack_in_last_ack_is_not_the_last_ack() {
    let t = Timeouts::default();
    let mut c = established(TcpConfig::default(), t);
    c.send(
        Dir::Orig,
        &seg(info(FIN | ACK, C_ISN + 1, S_ISN + 1, 65535, 0)),
    );
    c.send(
        Dir::Reply,
        &seg(info(FIN | ACK, S_ISN + 1, C_ISN + 2, 65535, 0)),
    );
    assert_eq!(c.st.state, TcpConntrack::LastAck);
    // A new SYN from the client while the old connection lingers.
    assert_eq!(
        c.send(Dir::Orig, &seg(info(SYN, 42_000_000, 0, 65535, 0))),
        TcpOutcome::Ignore
    );
    assert_ne!(c.st.last_flags & TcpState::EXP_CHALLENGE_ACK, 0);
    // The server's challenge ACK must not move us to TIME_WAIT.
    assert_eq!(
        c.send(Dir::Reply, &seg(info(ACK, S_ISN + 2, C_ISN + 2, 65535, 0))),
        TcpOutcome::Ignore
    );
    assert_eq!(c.st.state, TcpConntrack::LastAck);
    assert_eq!(c.st.last_flags & TcpState::EXP_CHALLENGE_ACK, 0);
}

#[test]
fn syn_in_established_is_ignored_and_noted() {
    let t = Timeouts::default();
    let mut c = established(TcpConfig::default(), t);
    assert_eq!(
        c.send(Dir::Orig, &seg(info(SYN, 31_337, 0, 65535, 0))),
        TcpOutcome::Ignore
    );
    assert_eq!(c.st.state, TcpConntrack::Established);
    assert_eq!((c.st.last_index, c.st.last_end), (TcpIndex::Syn, 31_338));
    // RST answering that SYN (seq 0, ack = its end): window check skipped.
    let out = c.send(Dir::Reply, &seg(info(RST | ACK, 0, 31_338, 0, 0)));
    assert_eq!(out, accept(t.tcp_close_ms));
    assert_eq!(c.st.state, TcpConntrack::Close);
}

#[test]
fn rst_from_the_syn_side_does_not_skip_the_window() {
    let t = Timeouts::default();
    let mut c = established(TcpConfig::default(), t);
    assert_eq!(
        c.send(Dir::Orig, &seg(info(SYN, 31_337, 0, 65535, 0))),
        TcpOutcome::Ignore
    );
    // Same direction as the SYN: no skip, and its ack is beyond anything
    // the server sent.
    let out = c.send(Dir::Orig, &seg(info(RST | ACK, C_ISN + 1, 31_338, 0, 0)));
    assert!(
        matches!(out, TcpOutcome::Invalid(r) if r.starts_with("ACK is over")),
        "{out:?}"
    );
    assert_eq!(c.st.state, TcpConntrack::Established);
}

#[test]
fn rst_answering_challenge_ack_in_syn_sent() {
    let t = Timeouts::default();
    let (mut c, _) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
    // Half-open peer answers with an ACK for something else.
    assert_eq!(
        c.send(Dir::Reply, &seg(info(ACK, 8888, 424_242, 65535, 0))),
        TcpOutcome::Ignore
    );
    assert_eq!(c.st.last_ack, 424_242);
    let out = c.send(Dir::Orig, &seg(info(RST, 424_242, 0, 0, 0)));
    assert_eq!(out, accept(t.tcp_close_ms));
    assert_eq!(c.st.state, TcpConntrack::Close);
}

#[test]
fn invalid_transitions() {
    let t = Timeouts::default();
    let (mut c, _) = Conn::open(&seg(info(SYN, C_ISN, 0, 65535, 0)), TcpConfig::default(), t);
    // Client ACK before any SYN/ACK.
    let out = c.send(Dir::Orig, &seg(info(ACK, C_ISN + 1, 1, 65535, 0)));
    assert_eq!(out, TcpOutcome::Invalid("packet invalid in this state"));
    // Client FIN in SYN_SENT.
    let out = c.send(Dir::Orig, &seg(info(FIN | ACK, C_ISN + 1, 1, 65535, 0)));
    assert_eq!(out, TcpOutcome::Invalid("packet invalid in this state"));
    // Invalid flags never reach the table.
    let out = c.send(Dir::Orig, &seg(info(SYN | RST, C_ISN, 0, 65535, 0)));
    assert_eq!(out, TcpOutcome::Invalid("invalid tcp flag combination"));
    assert_eq!(c.st.state, TcpConntrack::SynSent);
}

#[test]
fn flag_combinations() {
    for ok in [
        SYN,
        SYN | URG,
        SYN | ACK,
        RST,
        RST | ACK,
        FIN | ACK,
        FIN | ACK | URG,
        ACK,
        ACK | URG,
    ] {
        assert!(tcp_error_flags_ok(ok), "{ok:#x}");
        assert!(tcp_error_flags_ok(ok | PSH | ECE | CWR), "{ok:#x}");
    }
    for bad in [
        0,
        PSH,
        FIN,
        URG,
        SYN | FIN,
        SYN | RST,
        RST | FIN,
        FIN | URG,
        SYN | ACK | FIN,
        RST | ACK | URG,
    ] {
        assert!(!tcp_error_flags_ok(bad), "{bad:#x}");
    }
    let valid = (0..=255u8).filter(|&f| tcp_error_flags_ok(f)).count();
    assert_eq!(valid, 9 * 8);
}

#[test]
fn malformed_options_are_harmless() {
    let t = Timeouts::default();
    for opts in [
        &[3u8][..],
        &[3, 0],
        &[3, 1, 5],
        &[3, 9, 7, 0],
        &[2, 4, 5],
        &[0, 3, 3, 7],
        &[1, 1, 1, 1],
    ] {
        let opts: &'static [u8] = Box::leak(opts.to_vec().into_boxed_slice());
        let (c, out) = Conn::open(
            &seg_opts(info(SYN, C_ISN, 0, 65535, 0), opts),
            TcpConfig::default(),
            t,
        );
        assert_eq!(out, accept(t.tcp_syn_sent_ms));
        assert_eq!(
            c.st.seen[0].flags & TcpPeer::FLAG_WINDOW_SCALE,
            0,
            "{opts:?}"
        );
    }
}

#[test]
fn state_names_match_conntrack() {
    let all = [
        (TcpConntrack::None, "NONE"),
        (TcpConntrack::SynSent, "SYN_SENT"),
        (TcpConntrack::SynRecv, "SYN_RECV"),
        (TcpConntrack::Established, "ESTABLISHED"),
        (TcpConntrack::FinWait, "FIN_WAIT"),
        (TcpConntrack::CloseWait, "CLOSE_WAIT"),
        (TcpConntrack::LastAck, "LAST_ACK"),
        (TcpConntrack::TimeWait, "TIME_WAIT"),
        (TcpConntrack::Close, "CLOSE"),
        (TcpConntrack::SynSent2, "SYN_SENT2"),
    ];
    for (i, (s, name)) in all.iter().enumerate() {
        assert_eq!(*s as usize, i);
        assert_eq!(s.name(), *name);
    }
}

fn arb_segment() -> impl Strategy<Value = (bool, TcpInfo, Vec<u8>)> {
    let flags = prop_oneof![
        Just(SYN),
        Just(SYN | ACK),
        Just(ACK),
        Just(ACK | PSH),
        Just(FIN | ACK),
        Just(RST),
        Just(RST | ACK),
        any::<u8>(),
    ];
    // Sequence numbers near the handshake's, or anywhere.
    let num = prop_oneof![990u32..1200, 4990u32..5200, any::<u32>(), Just(0u32)];
    let opts = prop_oneof![
        Just(vec![]),
        Just(vec![1, 3, 3, 7]),
        Just(vec![1, 1, 4, 2]),
        proptest::collection::vec(any::<u8>(), 0..40),
    ];
    (
        any::<bool>(),
        flags,
        num.clone(),
        num,
        any::<u16>(),
        0u16..2000,
        opts,
    )
        .prop_map(|(reply, flags, seq, ack, window, payload_len, opts)| {
            let mut i = info(flags, seq, ack, window, payload_len);
            i.header_len = 20 + (opts.len() as u8 & !3);
            (reply, i, opts)
        })
}

proptest! {
    #[test]
    fn random_segments_never_panic(
        liberal in any::<bool>(),
        loose in any::<bool>(),
        ignore_rst in any::<bool>(),
        segs in proptest::collection::vec(arb_segment(), 1..60),
    ) {
        let cfg = TcpConfig { be_liberal: liberal, loose, ignore_invalid_rst: ignore_rst, max_retrans: 3 };
        let t = Timeouts::default();
        let allowed = [
            t.tcp_syn_sent_ms, t.tcp_syn_recv_ms, t.tcp_established_ms, t.tcp_fin_wait_ms,
            t.tcp_close_wait_ms, t.tcp_last_ack_ms, t.tcp_time_wait_ms, t.tcp_close_ms,
            t.tcp_syn_sent2_ms, t.tcp_retrans_ms, t.tcp_unack_ms,
        ];
        let mut conn: Option<Conn> = None;
        for (reply, info, opts) in &segs {
            let s = TcpSegment { info: *info, options: opts };
            let Some(c) = conn.as_mut() else {
                if let Ok(st) = TcpState::new(&s, &cfg) {
                    prop_assert_eq!(st.state, TcpConntrack::None);
                    let mut c = Conn { st, status: Status::default(), cfg, t };
                    let out = c.send(Dir::Orig, &s);
                    prop_assert!(matches!(out, TcpOutcome::Accept { .. }), "first packet: {:?}", out);
                    conn = Some(c);
                }
                continue;
            };
            let dir = if *reply { Dir::Reply } else { Dir::Orig };
            let assured_before = c.assured();
            let out = c.send(dir, &s);
            prop_assert!(c.st.state.name() != "NONE", "connection fell back to NONE");
            prop_assert!(!assured_before || c.assured(), "ASSURED was cleared");
            match out {
                TcpOutcome::Accept { timeout_ms } => prop_assert!(allowed.contains(&timeout_ms)),
                TcpOutcome::InvalidLowerTimeout { timeout_ms, .. } => {
                    prop_assert!(c.assured());
                    prop_assert_eq!(timeout_ms, t.tcp_unack_ms);
                }
                TcpOutcome::AcceptAndKill | TcpOutcome::Repeat => conn = None,
                TcpOutcome::Ignore | TcpOutcome::Invalid(_) => {}
            }
        }
    }
}

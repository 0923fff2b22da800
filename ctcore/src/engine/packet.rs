//! What goes into the engine and comes out of it, per packet: the frame
//! offered ([`Pkt`]), the caller's verdict ([`Decision`], [`Egress`]) and the
//! engine's ([`CtResult`]), and the handle of a tracked connection.

use crate::conn::CtInfo;
use crate::helper::{Helper, PacketFix};
use crate::nat::rewrite::Translation;
use crate::table::Local;
use crate::tuple::Dir;
use crate::wire::{self, ParseError, Parsed};

/// What the receiving NIC said about a frame's L4 checksum (DPDK's
/// `RTE_MBUF_F_RX_L4_CKSUM_*`), as the kernel uses `skb->ip_summed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxCsum {
    /// Not checked by the NIC: conntrack verifies it in software (when
    /// `Tunables::checksum` is on).
    #[default]
    Unknown,
    /// Verified good (CHECKSUM_UNNECESSARY): no software check.
    Good,
    /// Verified bad: INVALID, as the software check would find it.
    Bad,
}

/// One frame offered to the engine.
#[derive(Debug, Clone, Copy)]
pub struct Pkt<'a> {
    pub frame: &'a [u8],
    /// The conntrack zone of the frame's lookup (the kernel's ct zone).
    pub zone: u16,
    /// The zone of the reply direction: `zone` (the default), or another
    /// for a directional zone (nft `ct original zone set`): a new
    /// connection's reply tuple takes it, and a frame not found in `zone`
    /// is looked up in it as well (resolve_normal_ct's second lookup).
    pub reply_zone: u16,
    /// The ingress port (NAT and policy rules match on it).
    pub in_port: u16,
    /// The NIC's verdict on the L4 checksum.
    pub rx_csum: RxCsum,
    /// The caller checked the IPv4 header (version, lengths, checksum) as
    /// `ip_rcv` does: conntrack does not sum it again.
    pub ip_checked: bool,
}

impl<'a> Pkt<'a> {
    /// A frame whose checksum no NIC checked.
    pub fn new(frame: &'a [u8], zone: u16, in_port: u16) -> Pkt<'a> {
        Pkt {
            frame,
            zone,
            reply_zone: zone,
            in_port,
            rx_csum: RxCsum::Unknown,
            ip_checked: false,
        }
    }
}

/// A reference to a connection that stays valid while the connection lives:
/// its place in the table plus its id (checked on use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnHandle {
    pub stripe: u32,
    pub local: Local,
    pub id: u32,
}

/// What the engine decided for one packet.
#[derive(Debug, Clone, Copy)]
pub struct CtResult {
    pub parsed: Result<Parsed, ParseError>,
    pub ctinfo: CtInfo,
    pub dir: Dir,
    /// The connection (after confirm for new ones); None for INVALID/UNTRACKED.
    pub conn: Option<ConnHandle>,
    /// Why the packet is INVALID, if it is.
    pub invalid_reason: Option<&'static str>,
    /// Set when conntrack itself dropped the packet (table full, clash, no NAT port).
    pub ct_drop: Option<&'static str>,
    /// The translation to apply to this packet, if its connection is NATed.
    pub rewrite: Option<Translation>,
    /// Its connection's mark (nft `ct mark`; 0 for a new connection and
    /// for packets without one).
    pub mark: u32,
    /// The zone of its connection's original direction (the packet's own
    /// zone when it has no connection): where its route is looked up.
    pub zone: u16,
    /// What a conntrack helper changes in the packet, to apply after
    /// `rewrite` ([`crate::helper::apply_fix`]).
    pub fix: Option<PacketFix>,
    /// The verdict `decide` asked to cache for this direction of the
    /// packet's connection ([`Egress::cache`], kept in the record; 0: none).
    /// `decide` validates it: the engine clears it only when the mark
    /// changes.
    pub cached: u16,
}

impl CtResult {
    /// Everything but `parsed` back to its default.
    #[inline]
    pub(super) fn reset_verdict(&mut self) {
        self.ctinfo = CtInfo::Invalid;
        self.dir = Dir::Orig;
        self.conn = None;
        self.mark = 0;
        self.invalid_reason = None;
        self.ct_drop = None;
        self.rewrite = None;
        self.fix = None;
        self.cached = 0;
    }

    /// Whether this packet's destination is being translated in its original
    /// direction (nft `ct status dnat` for the policy).
    pub fn dnat(&self) -> bool {
        self.dir == Dir::Orig && self.rewrite.is_some_and(|w| w.dst().is_some())
    }

    /// The destination the packet will have after translation: what routing
    /// uses. Borrowed in place (a copy of the address right after the engine
    /// wrote it costs a store-forwarding stall).
    pub fn route_dst(&self) -> Option<&wire::Addr> {
        let p = self.parsed.as_ref().ok()?;
        Some(
            self.rewrite
                .as_ref()
                .and_then(Translation::dst_addr)
                .unwrap_or(&p.dst),
        )
    }
}

/// The verdict fields of a [`CtResult`], borrowed apart from its parse, so
/// that the engine reads the parse in place while it writes the verdict
/// (copying the ~100-byte `Parsed` out first was 11 % of the stage's time in
/// the appliance).
pub(super) struct Verdict<'a> {
    pub(super) ctinfo: &'a mut CtInfo,
    pub(super) dir: &'a mut Dir,
    pub(super) conn: &'a mut Option<ConnHandle>,
    pub(super) invalid_reason: &'a mut Option<&'static str>,
    pub(super) rewrite: &'a mut Option<Translation>,
    pub(super) mark: &'a mut u32,
    pub(super) zone: &'a mut u16,
    pub(super) cached: &'a mut u16,
}

impl CtResult {
    /// The parse, and the verdict to fill in.
    pub(super) fn split(&mut self) -> (&Result<Parsed, ParseError>, Verdict<'_>) {
        (
            &self.parsed,
            Verdict {
                ctinfo: &mut self.ctinfo,
                dir: &mut self.dir,
                conn: &mut self.conn,
                invalid_reason: &mut self.invalid_reason,
                rewrite: &mut self.rewrite,
                mark: &mut self.mark,
                zone: &mut self.zone,
                cached: &mut self.cached,
            },
        )
    }
}

impl Default for CtResult {
    fn default() -> Self {
        CtResult {
            parsed: Err(ParseError::TruncatedEthernet),
            ctinfo: CtInfo::Invalid,
            dir: Dir::Orig,
            conn: None,
            invalid_reason: None,
            ct_drop: None,
            rewrite: None,
            mark: 0,
            zone: 0,
            fix: None,
            cached: 0,
        }
    }
}

/// Where an accepted packet leaves: the egress port and its address of the
/// packet's family (what MASQUERADE translates to). The engine reads it
/// only for a new connection's source NAT (ctinfo NEW): deciders may leave
/// it out for the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    pub port: u16,
    pub addr: Option<wire::Addr>,
    /// Set the connection's mark to this (nft `ct mark set`): a new
    /// connection is confirmed with it; a known one changes (an UPDATE event).
    pub mark: Option<u32>,
    /// Assign this helper to the packet's new connection (nft `ct helper
    /// set`); only when helpers are on ([`Engine::with_helpers`]).
    pub helper: Helper,
    /// A verdict to cache for the packet's direction of its known
    /// connection, handed back as [`CtResult::cached`] with its next
    /// packets (0: none). Opaque to the engine.
    pub cache: u16,
}

impl Egress {
    /// Port 0, no address: for callers without ports (tests, NAT-less replay).
    pub const NONE: Egress = Egress {
        port: 0,
        addr: None,
        mark: None,
        helper: Helper::None,
        cache: 0,
    };
}

/// The caller's verdict on a packet before confirmation (routing + policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Forward it out of `Egress` (source NAT rules apply: POSTROUTING).
    Accept(Egress),
    /// Deliver it to the appliance itself (INPUT: confirmed, no source NAT).
    Local,
    Drop,
}

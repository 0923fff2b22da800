//! The cached verdict of an established connection's direction.
//!
//! Routing and policy (`Shared::decide`) ask the same question of every
//! packet of a direction of a known connection, and get the same answer
//! while its ctinfo stays (NEW until the first reply, then ESTABLISHED):
//! its inputs are the connection's addresses, zone, protocol, destination
//! port, ctinfo, DNAT status and mark, the receiving port, and the
//! configuration (routes, local addresses, policy), which does not change
//! while the appliance runs. Only the TTL differs per packet. (A RELATED
//! packet, an ICMP error, has addresses of its own: never cached; nor is
//! a new connection's first packet, which is not in the table yet and
//! whose answer carries what its NAT binding needs.) So the
//! answer (route, policy rule, egress port) is kept in the connection's
//! record, as a 16-bit token ctcore stores per direction
//! (`Conn::verdicts`) and hands back with the next packets
//! (`CtResult::cached`). ctcore clears the tokens when the mark changes;
//! the rest of what could differ (the receiving port, the ctinfo, the
//! family) is in the token's entry and compared on every use.
//!
//! A token is an index into one table shared by the workers (a connection
//! may be handled by more than one, and a token must mean the same to
//! every worker): entries are written once, never changed, and each is a
//! packed `u64`, so reading one is a plain load. Entries are few (one per
//! receiving port, ctinfo, route and rule that established traffic
//! combines): each worker remembers the tokens it has seen in a map of its
//! own, and takes the table's lock only for an entry it has not met.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use ctcore::conn::CtInfo;
use ctcore::wire::Family;

use crate::route::RouteId;

/// Entries the table holds (tokens 1..=CAPACITY; 0 is "none").
pub const CAPACITY: usize = u16::MAX as usize;

/// What a token stands for: the answer of routing and policy for one
/// receiving port, ctinfo (NEW, ESTABLISHED or its reply) and family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cached {
    pub in_port: u8,
    pub ctinfo: CtInfo,
    pub v6: bool,
    pub route: RouteId,
    /// The policy rule that accepted (the rules' count: the default).
    pub rule: u16,
    pub out_port: u8,
}

/// Bit 63 marks a written entry.
const WRITTEN: u64 = 1 << 63;

impl Cached {
    fn pack(self) -> u64 {
        WRITTEN
            | u64::from(self.in_port)
            | u64::from(self.ctinfo as u8) << 8
            | u64::from(self.v6) << 16
            | u64::from(self.route.index()) << 24
            | u64::from(self.rule) << 40
            | u64::from(self.out_port) << 56
    }

    /// The entry `pack` wrote (the packet path reads it through
    /// [`VerdictCache::answer`]; this whole form is what tests check
    /// against).
    #[cfg(test)]
    fn unpack(v: u64) -> Option<Cached> {
        if v & WRITTEN == 0 {
            return None;
        }
        let ctinfo = match (v >> 8) as u8 {
            0 => CtInfo::Established,
            2 => CtInfo::New,
            3 => CtInfo::EstablishedReply,
            // Nothing else is cached.
            _ => return None,
        };
        Some(Cached {
            in_port: v as u8,
            ctinfo,
            v6: (v >> 16) & 1 == 1,
            route: RouteId::from_index((v >> 24) as u16),
            rule: (v >> 40) as u16,
            out_port: (v >> 56) as u8 & 0x7f,
        })
    }

    /// Whether this answer holds for a packet of `family` with `ctinfo`
    /// received on `in_port` (what `answer` compares in packed form).
    #[cfg(test)]
    pub fn holds(&self, in_port: u8, ctinfo: CtInfo, family: Family) -> bool {
        self.in_port == in_port && self.ctinfo == ctinfo && self.v6 == (family == Family::V6)
    }
}

/// The table of cached answers, shared by the workers.
pub struct VerdictCache {
    entries: Box<[AtomicU64]>,
    /// Every entry written, by value (for a worker meeting one it has not
    /// seen), and how many there are.
    index: Mutex<(HashMap<u64, u16>, usize)>,
    /// Answers the full table had no room for (each once per worker: they
    /// are decided per packet from then on).
    full: AtomicU64,
}

impl Default for VerdictCache {
    fn default() -> Self {
        VerdictCache {
            entries: (0..CAPACITY).map(|_| AtomicU64::new(0)).collect(),
            index: Mutex::new((HashMap::new(), 0)),
            full: AtomicU64::new(0),
        }
    }
}

/// A worker's own map of the tokens it has met (0 for an answer the full
/// table refused: the lock is not taken for it again), and how many
/// packets it answered from tokens.
#[derive(Default)]
pub struct Tokens {
    met: HashMap<u64, u16>,
    pub answered: u64,
}

impl VerdictCache {
    /// What `token` stands for (None for 0 or an unwritten one).
    #[cfg(test)]
    pub fn get(&self, token: u16) -> Option<Cached> {
        let e = self.entries.get(usize::from(token).checked_sub(1)?)?;
        // Acquire: pairs with the Release that wrote it (another worker's).
        Cached::unpack(e.load(Ordering::Acquire))
    }

    /// What `token` stands for if it holds for a packet of `family` with
    /// `ctinfo` received on `in_port` ([`VerdictCache::get`] and
    /// [`Cached::holds`] in one compare of the packed entry).
    #[inline(always)]
    pub fn answer(
        &self,
        token: u16,
        in_port: u8,
        ctinfo: CtInfo,
        family: Family,
    ) -> Option<Cached> {
        // Token 0 wraps to an index past the end.
        let e = self.entries.get(usize::from(token).wrapping_sub(1))?;
        // Acquire: pairs with the Release that wrote it (another worker's).
        let v = e.load(Ordering::Acquire);
        let v6 = family == Family::V6;
        let want =
            WRITTEN | u64::from(in_port) | u64::from(ctinfo as u8) << 8 | u64::from(v6) << 16;
        // Only the ctinfos `unpack` accepts are ever written (`token`).
        if v & (WRITTEN | 0xff_ffff) != want {
            return None;
        }
        Some(Cached {
            in_port,
            ctinfo,
            v6,
            route: RouteId::from_index((v >> 24) as u16),
            rule: (v >> 40) as u16,
            out_port: (v >> 56) as u8 & 0x7f,
        })
    }

    /// The token for `c`, the answer for a packet of a known connection:
    /// from the worker's own map, else from the table (written now if
    /// new). 0 when the table is full or `c` is RELATED (never cached).
    pub fn token(&self, mine: &mut Tokens, c: Cached) -> u16 {
        let cacheable = matches!(
            c.ctinfo,
            CtInfo::New | CtInfo::Established | CtInfo::EstablishedReply
        );
        if !cacheable || c.out_port > 0x7f {
            return 0;
        }
        let v = c.pack();
        if let Some(&t) = mine.met.get(&v) {
            return t;
        }
        let mut g = self.index.lock().unwrap_or_else(|e| e.into_inner());
        let (index, len) = &mut *g;
        let t = match index.get(&v) {
            Some(&t) => t,
            None if *len < CAPACITY => {
                self.entries[*len].store(v, Ordering::Release);
                *len += 1;
                let t = *len as u16;
                index.insert(v, t);
                t
            }
            None => {
                self.full.fetch_add(1, Ordering::Relaxed);
                0
            }
        };
        mine.met.insert(v, t);
        t
    }

    /// Entries written.
    pub fn entries(&self) -> usize {
        self.index.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// Answers refused for want of room (see [`CAPACITY`]).
    pub fn full(&self) -> u64 {
        self.full.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(in_port: u8, route: u16, rule: u16) -> Cached {
        Cached {
            in_port,
            ctinfo: CtInfo::EstablishedReply,
            v6: true,
            route: RouteId::from_index(route),
            rule,
            out_port: 3,
        }
    }

    #[test]
    fn a_token_stands_for_what_it_was_made_from_for_every_worker() {
        let cache = VerdictCache::default();
        let (mut a, mut b) = (Tokens::default(), Tokens::default());
        let c = cached(1, 700, 12);
        let t = cache.token(&mut a, c);
        assert_ne!(t, 0);
        assert_eq!(cache.get(t), Some(c));
        // The same answer, the same token, from another worker.
        assert_eq!(cache.token(&mut b, c), t);
        let d = cached(2, 700, 12);
        let u = cache.token(&mut b, d);
        assert_ne!(u, t);
        assert_eq!(cache.get(u), Some(d));
        assert_eq!(cache.entries(), 2);
        assert!(c.holds(1, CtInfo::EstablishedReply, Family::V6));
        assert!(!c.holds(2, CtInfo::EstablishedReply, Family::V6));
        assert!(!c.holds(1, CtInfo::Established, Family::V6));
        assert!(!c.holds(1, CtInfo::EstablishedReply, Family::V4));
    }

    /// `answer` is `get` then `holds`, for every token of a few answers
    /// (and none, and tokens not written) against every packet kind.
    #[test]
    fn an_answer_is_what_get_and_holds_give() {
        let cache = VerdictCache::default();
        let mut mine = Tokens::default();
        let ctinfos = [
            CtInfo::Established,
            CtInfo::Related,
            CtInfo::New,
            CtInfo::EstablishedReply,
            CtInfo::RelatedReply,
            CtInfo::Invalid,
        ];
        let mut tokens = vec![0, 1, 17, u16::MAX];
        for (i, &ctinfo) in ctinfos.iter().enumerate() {
            for v6 in [false, true] {
                let c = Cached {
                    ctinfo,
                    v6,
                    out_port: 0x7f,
                    ..cached(i as u8 * 50, 65535, u16::MAX)
                };
                tokens.push(cache.token(&mut mine, c));
            }
        }
        for t in tokens {
            for in_port in [0, 50, 100, 150, 200, 250] {
                for ctinfo in ctinfos {
                    for family in [Family::V4, Family::V6] {
                        assert_eq!(
                            cache.answer(t, in_port, ctinfo, family),
                            cache.get(t).filter(|c| c.holds(in_port, ctinfo, family)),
                            "token {t}, port {in_port}, {ctinfo:?}, {family:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn related_traffic_is_not_cached_and_no_token_is_made_up() {
        let cache = VerdictCache::default();
        let mut mine = Tokens::default();
        for ctinfo in [CtInfo::Related, CtInfo::RelatedReply, CtInfo::Invalid] {
            let c = Cached {
                ctinfo,
                ..cached(1, 1, 1)
            };
            assert_eq!(cache.token(&mut mine, c), 0);
        }
        assert_eq!(cache.get(0), None);
        assert_eq!(cache.get(1), None, "not written");
        assert_eq!(cache.get(u16::MAX), None);
    }

    #[test]
    fn a_full_table_answers_none() {
        let cache = VerdictCache::default();
        let mut mine = Tokens::default();
        for i in 0..CAPACITY {
            let c = cached((i % 200) as u8, (i / 200) as u16, 0);
            assert_eq!(usize::from(cache.token(&mut mine, c)), i + 1);
        }
        assert_eq!(cache.full(), 0);
        assert_eq!(cache.token(&mut mine, cached(250, 0, 1)), 0);
        assert_eq!(cache.full(), 1);
        // Asked again, the worker remembers the refusal (no lock, no count).
        assert_eq!(cache.token(&mut mine, cached(250, 0, 1)), 0);
        assert_eq!(cache.full(), 1);
        // What is in keeps its token.
        assert_eq!(cache.token(&mut Tokens::default(), cached(0, 0, 0)), 1);
    }
}

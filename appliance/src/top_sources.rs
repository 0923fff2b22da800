//! The sources that open the most connections, per worker: a space-saving
//! summary (Metwally, Agrawal, El Abbadi, "Efficient computation of frequent
//! and top-k elements in data streams", 2005). A source not in the summary
//! replaces the first of the smallest entries and inherits its count, so any
//! source that opened more than 1/len of the connections is in it.
//!
//! It is updated for every new connection, so it is laid out for that: a
//! 32-bit tag per entry, compared all at once (the compiler makes it a few
//! vector compares), and the smallest count kept with the set of entries
//! that hold it, so that a source not in the summary (a scan, a flood, a
//! bench: most new connections) finds the entry it replaces without looking
//! at the others. The set is worked out again only when its last entry
//! leaves it.

use ctcore::tuple::{Addr, Family};

/// Sources of new connections each worker keeps count of.
pub const TOP_SOURCES: usize = 16;

/// A source address and (an estimate from above of) the connections it opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopSource {
    pub family: Family,
    pub addr: Addr,
    pub new_conns: u64,
}

/// One worker's summary.
#[derive(Debug, Clone)]
pub struct TopSources {
    entries: [TopSource; TOP_SOURCES],
    /// Per entry, [`tag`] of its source.
    tags: [u32; TOP_SOURCES],
    /// The smallest count of any entry.
    min: u64,
    /// Bit i set: entry i's count is `min`.
    at_min: u32,
}

impl Default for TopSources {
    fn default() -> Self {
        TopSources {
            entries: [TopSource::default(); TOP_SOURCES],
            tags: [tag(Family::default(), &Addr::default()); TOP_SOURCES],
            min: 0,
            at_min: (1 << TOP_SOURCES) - 1,
        }
    }
}

/// The address folded to 32 bits (all of an IPv4 one), with its family: equal
/// sources have equal tags.
#[inline]
fn tag(family: Family, addr: &Addr) -> u32 {
    let a = u128::from_ne_bytes(addr.0);
    let x = (a as u64) ^ ((a >> 64) as u64).rotate_left(29);
    (x as u32) ^ ((x >> 32) as u32) ^ (family as u32) << 24
}

/// Bit i set: `tags[i] == t` (the compiler makes it vector compares).
#[inline]
fn matching(tags: &[u32; TOP_SOURCES], t: u32) -> u32 {
    tags.iter()
        .enumerate()
        .fold(0, |m, (i, &x)| m | u32::from(x == t) << i)
}

impl TopSources {
    /// Counts one new connection from `addr`.
    #[inline]
    pub fn note(&mut self, family: Family, addr: Addr) {
        let t = tag(family, &addr);
        let mut m = matching(&self.tags, t);
        while m != 0 {
            let i = m.trailing_zeros() as usize;
            m &= m - 1;
            let e = &self.entries[i];
            if e.new_conns > 0 && e.addr == addr && e.family == family {
                self.bump(i);
                return;
            }
        }
        // Not in the summary: it takes the first of the smallest entries.
        let i = self.at_min.trailing_zeros() as usize;
        self.entries[i] = TopSource {
            family,
            addr,
            new_conns: self.min,
        };
        self.tags[i] = t;
        self.bump(i);
    }

    /// Entry `i` counts one more.
    #[inline]
    fn bump(&mut self, i: usize) {
        let e = &mut self.entries[i];
        e.new_conns = e.new_conns.saturating_add(1);
        self.at_min &= !(1 << i);
        if self.at_min == 0 {
            self.min = self.entries.iter().map(|e| e.new_conns).min().unwrap_or(0);
            self.at_min = self
                .entries
                .iter()
                .enumerate()
                .fold(0, |m, (j, e)| m | u32::from(e.new_conns == self.min) << j);
        }
    }

    /// The entries, in no order (those with no connections are empty).
    pub fn entries(&self) -> [TopSource; TOP_SOURCES] {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The summary as the paper states it: a linear search, then the first
    /// of the smallest entries.
    fn reference(top: &mut [TopSource; TOP_SOURCES], family: Family, addr: Addr) {
        if let Some(e) = top
            .iter_mut()
            .find(|e| e.new_conns > 0 && e.addr == addr && e.family == family)
        {
            e.new_conns += 1;
            return;
        }
        let min = top.iter().map(|e| e.new_conns).min().unwrap();
        let i = top.iter().position(|e| e.new_conns == min).unwrap();
        top[i] = TopSource {
            family,
            addr,
            new_conns: min + 1,
        };
    }

    fn source(n: u8) -> (Family, Addr) {
        if n % 7 == 6 {
            // An IPv6 address whose first bytes match an IPv4 one's.
            let mut a = Addr::from_v4([192, 0, 2, n / 7]);
            a.0[15] = 1;
            (Family::V6, a)
        } else {
            (Family::V4, Addr::from_v4([192, 0, 2, n / 7]))
        }
    }

    #[test]
    fn a_heavy_source_stays_among_many_light_ones() {
        let mut top = TopSources::default();
        let heavy = Addr::from_v4([192, 0, 2, 66]);
        for i in 0..10_000u32 {
            // Every 4th new connection is from the heavy source, the rest from
            // 7500 distinct ones.
            if i % 4 == 0 {
                top.note(Family::V4, heavy);
            } else {
                top.note(Family::V4, Addr::from_v4(i.to_be_bytes()));
            }
        }
        let entries = top.entries();
        let best = entries.iter().max_by_key(|t| t.new_conns).unwrap();
        assert_eq!(best.addr, heavy);
        // Space-saving never undercounts.
        assert!(best.new_conns >= 2500, "{best:?}");
        assert_eq!(entries.iter().map(|t| t.new_conns).sum::<u64>(), 10_000);
    }

    /// Entry for entry, count for count, what the paper's summary keeps,
    /// over streams of few distinct sources (hits, ties and replacements
    /// all occur) drawn from several seeds.
    #[test]
    fn keeps_what_the_linear_summary_keeps() {
        for seed in 1..=64u64 {
            let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let distinct = 17 + seed % 48;
            let mut fast = TopSources::default();
            let mut slow = [TopSource::default(); TOP_SOURCES];
            for _ in 0..3000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Skewed: low numbers come more often.
                let n = ((x % distinct) * (x >> 32 & 7) / 7) as u8;
                let (family, addr) = source(n);
                fast.note(family, addr);
                reference(&mut slow, family, addr);
                assert_eq!(fast.entries(), slow, "seed {seed}");
            }
        }
    }
}

//! IP reassembly with the semantics of the kernel's `nf_defrag_ipv4`
//! (`ip_defrag`, net/ipv4/ip_fragment.c) and `nf_defrag_ipv6`
//! (`nf_ct_frag6_gather`, net/ipv6/netfilter/nf_conntrack_reasm.c), which
//! run before conntrack: conntrack and NAT only ever see whole datagrams.
//!
//! A [`Defrag`] holds the fragments of incomplete datagrams: each fragment
//! is the caller's handle `H` (the appliance's mbuf, the replay's record
//! index) with where its bytes go. When a datagram completes, the caller
//! has [`Defrag::assemble`] write the whole datagram into a buffer it keeps
//! (conntrack, the policy and NAT run on that), then takes the fragments
//! back with [`Defrag::finish`] and writes the translated datagram's bytes
//! into each with [`refragment`]: what leaves is the original fragments at
//! their sizes, never a datagram larger than what arrived.
//!
//! The kernel's rules, per queue (a datagram: addresses, id, IPv4 protocol,
//! zone):
//! - a fragment that overlaps one already held (partly: RFC 5722, also for
//!   IPv4 since Linux 4.19) drops the whole datagram; one that lies within a
//!   run of fragments already held is a duplicate: dropped, the datagram
//!   kept (`inet_frag_queue_insert`'s IPFRAG_DUP); so duplicates never
//!   complete a datagram;
//! - a last fragment that ends before bytes already held or at a different
//!   end than an earlier last fragment, data beyond a known end, a fragment
//!   without data: corrupt. IPv4 drops the datagram (`discard_qp`), IPv6 the
//!   fragment only (`goto err`);
//! - a non-last fragment whose end is not a multiple of 8: IPv4 trims it to
//!   one; IPv6 drops the datagram and lets the fragment through
//!   unreassembled (`-EPROTO`: conntrack then sees a fragment);
//! - an IPv6 first fragment without the whole upper-layer header (RFC 7112,
//!   `ipv6frag_thdr_truncated`) passes unreassembled, as does an IPv6
//!   atomic fragment here (offset 0, no more fragments: complete by itself);
//! - a queue lives `timeout_v4_ms` (ipfrag_time, 30 s) or `timeout_v6_ms`
//!   (nf_conntrack_frag6_timeout, 60 s) from its first fragment; what it
//!   held then is dropped (the conntrack defrag user sends no ICMP);
//! - while the fragments held cost more than `high_thresh` bytes
//!   (ipfrag_high_thresh, 4 MiB), new fragments are dropped
//!   (`inet_frag_find` finds nothing over the threshold).
//!
//! All memory is reserved by [`Defrag::new`]: nothing is allocated per
//! fragment.

use std::collections::HashMap;

use crate::checksum;

/// Limits, like the kernel's sysctls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes the held fragments may cost (`ipfrag_high_thresh`).
    pub high_thresh: usize,
    /// IPv4 datagram lifetime (`ipfrag_time`).
    pub timeout_v4_ms: u64,
    /// IPv6 datagram lifetime (`nf_conntrack_frag6_timeout`).
    pub timeout_v6_ms: u64,
    /// Datagrams being reassembled at once.
    pub max_datagrams: usize,
    /// Fragments held at once.
    pub max_fragments: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            high_thresh: 4 * 1024 * 1024,
            timeout_v4_ms: 30_000,
            timeout_v6_ms: 60_000,
            max_datagrams: 1024,
            max_fragments: 4096,
        }
    }
}

/// Why a fragment was dropped (each counted under its own name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// It overlapped a fragment of its datagram (the datagram is dropped).
    Overlap,
    /// It repeated bytes already held.
    Duplicate,
    /// Inconsistent lengths or ends, or no data.
    Corrupt,
    /// The datagram would exceed 65,535 bytes.
    TooBig,
    /// Its datagram did not complete in time.
    Timeout,
    /// The fragment memory (bytes, datagrams or fragments) was full.
    Memory,
    /// Dropped with its datagram, which another fragment made invalid.
    DatagramDropped,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::Overlap => "frag_overlap",
            Cause::Duplicate => "frag_duplicate",
            Cause::Corrupt => "frag_corrupt",
            Cause::TooBig => "frag_too_big",
            Cause::Timeout => "frag_timeout",
            Cause::Memory => "frag_memory",
            Cause::DatagramDropped => "frag_datagram_dropped",
        }
    }
}

/// Counters, per worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DefragStats {
    /// Fragments taken in (held, or completing their datagram).
    pub held: u64,
    /// Datagrams reassembled.
    pub reassembled: u64,
    /// Fragments let through unreassembled (IPv6: truncated first
    /// fragment, a non-last fragment not a multiple of 8 long).
    pub passed: u64,
    pub overlap: u64,
    pub duplicate: u64,
    pub corrupt: u64,
    pub too_big: u64,
    pub timeout: u64,
    pub memory: u64,
    pub datagram_dropped: u64,
}

impl DefragStats {
    pub fn add(&mut self, o: &DefragStats) {
        self.held += o.held;
        self.reassembled += o.reassembled;
        self.passed += o.passed;
        self.overlap += o.overlap;
        self.duplicate += o.duplicate;
        self.corrupt += o.corrupt;
        self.too_big += o.too_big;
        self.timeout += o.timeout;
        self.memory += o.memory;
        self.datagram_dropped += o.datagram_dropped;
    }

    fn count(&mut self, c: Cause) {
        *match c {
            Cause::Overlap => &mut self.overlap,
            Cause::Duplicate => &mut self.duplicate,
            Cause::Corrupt => &mut self.corrupt,
            Cause::TooBig => &mut self.too_big,
            Cause::Timeout => &mut self.timeout,
            Cause::Memory => &mut self.memory,
            Cause::DatagramDropped => &mut self.datagram_dropped,
        } += 1;
    }

    /// Every counter with its name (for the stats line and metrics).
    pub fn fields(&self) -> [(&'static str, u64); 10] {
        [
            ("frag_held", self.held),
            ("frag_reassembled", self.reassembled),
            ("frag_passed", self.passed),
            ("frag_overlap", self.overlap),
            ("frag_duplicate", self.duplicate),
            ("frag_corrupt", self.corrupt),
            ("frag_too_big", self.too_big),
            ("frag_timeout", self.timeout),
            ("frag_memory", self.memory),
            ("frag_datagram_dropped", self.datagram_dropped),
        ]
    }
}

/// What [`Defrag::push`] did with a frame.
#[derive(Debug)]
pub enum Push<H> {
    /// Not a fragment to reassemble: the frame goes on as it is (the
    /// handle comes back).
    Whole(H),
    /// Held until its datagram completes.
    Held,
    /// Held, and its datagram is complete: [`Defrag::assemble`] it, then
    /// [`Defrag::finish`] it.
    Complete(Datagram),
    /// Dropped (the handle comes back for the caller to free).
    Dropped(H, Cause),
}

/// A complete datagram, until [`Defrag::finish`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Datagram(u32);

/// Where a reassembled datagram's layers start in the buffer
/// [`Defrag::assemble`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assembled {
    /// The IP header's offset (after Ethernet and VLAN tags).
    pub l3_offset: usize,
    /// Where the fragmentable part (the fragments' data) starts.
    pub data_offset: usize,
}

/// A fragment given back by [`Defrag::finish`]: where its data sits in its
/// own frame and in the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub l3_offset: u16,
    /// Where the fragment's data starts in its frame.
    pub data_at: u16,
    /// The data's offset in the datagram's fragmentable part, and its length.
    pub offset: u16,
    pub len: u16,
    pub v6: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    /// IPv4's protocol (0 for IPv6, whose queues ignore it).
    proto: u8,
    zone: u16,
}

#[derive(Debug, Clone, Copy, Default)]
struct Frag {
    offset: u32,
    end: u32,
    /// Whether it starts a run (the kernel's `fragrun`): fragments inserted
    /// at the tail right after the last one extend its run.
    run_head: bool,
    next: u32,
    place: PlaceRaw,
    cost: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct PlaceRaw {
    l3_offset: u16,
    data_at: u16,
}

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy)]
struct Queue {
    key: Key,
    live: bool,
    first_in: bool,
    last_in: bool,
    /// The datagram's data length as known (the end of its furthest or last fragment).
    len: u32,
    /// Data bytes held.
    meat: u32,
    /// Fragments in offset order.
    head: u32,
    /// The fragment with the largest end (the kernel's fragments_tail).
    tail: u32,
    expires_ms: u64,
    /// The first fragment had DF set (IPv4).
    df: bool,
}

impl Default for Queue {
    fn default() -> Queue {
        Queue {
            key: Key {
                v6: false,
                src: [0; 16],
                dst: [0; 16],
                id: 0,
                proto: 0,
                zone: 0,
            },
            live: false,
            first_in: false,
            last_in: false,
            len: 0,
            meat: 0,
            head: NIL,
            tail: NIL,
            expires_ms: 0,
            df: false,
        }
    }
}

/// The fragment fields of a frame, as the kernel reads them before
/// queueing.
#[derive(Debug)]
pub struct Info {
    key: Key,
    l3_offset: usize,
    /// Where the fragment's data starts in the frame.
    data_at: usize,
    offset: u32,
    /// Data length (the IP length minus the headers, not the frame's).
    data_len: u32,
    more: bool,
    df: bool,
}

/// A frame as [`read`] found it, for [`Defrag::push`].
#[derive(Debug)]
pub enum Read {
    NotFragment,
    /// An IPv6 fragment conntrack sees unreassembled (RFC 7112).
    Pass,
    Fragment(Info),
}

/// The reassembly state of one worker.
pub struct Defrag<H> {
    limits: Limits,
    queues: Box<[Queue]>,
    free_queues: Vec<u32>,
    index: HashMap<Key, u32>,
    frags: Box<[Frag]>,
    handles: Box<[Option<H>]>,
    free_frags: Vec<u32>,
    /// Bytes the held fragments cost.
    mem: usize,
    live: usize,
    /// No datagram expires before this (the scan in `expire` waits for it).
    next_expiry_ms: u64,
    pub stats: DefragStats,
}

impl<H> Defrag<H> {
    pub fn new(limits: Limits) -> Defrag<H> {
        let nq = limits.max_datagrams.max(1);
        let nf = limits.max_fragments.max(2);
        Defrag {
            limits,
            queues: vec![Queue::default(); nq].into_boxed_slice(),
            free_queues: (0..nq as u32).rev().collect(),
            index: HashMap::with_capacity(nq),
            frags: vec![Frag::default(); nf].into_boxed_slice(),
            handles: std::iter::repeat_with(|| None).take(nf).collect(),
            free_frags: (0..nf as u32).rev().collect(),
            mem: 0,
            live: 0,
            next_expiry_ms: u64::MAX,
            stats: DefragStats::default(),
        }
    }

    /// Fragments held now.
    pub fn fragments_held(&self) -> usize {
        self.frags.len() - self.free_frags.len()
    }

    /// Datagrams being reassembled now.
    pub fn datagrams(&self) -> usize {
        self.live
    }

    /// Bytes the held fragments cost now.
    pub fn memory(&self) -> usize {
        self.mem
    }

    /// Takes in the frame of handle `h`, which [`read`] read (it costs
    /// `cost` bytes while held). The fragments of a datagram this drops
    /// are given to `release`.
    pub fn push(
        &mut self,
        now_ms: u64,
        frame: Read,
        cost: usize,
        h: H,
        release: &mut dyn FnMut(H, Cause),
    ) -> Push<H> {
        let info = match frame {
            Read::NotFragment => return Push::Whole(h),
            Read::Pass => {
                self.stats.passed += 1;
                return Push::Whole(h);
            }
            Read::Fragment(i) => i,
        };
        if self.mem > self.limits.high_thresh {
            return self.drop(h, Cause::Memory);
        }
        let q = match self.index.get(&info.key).copied() {
            Some(q) if now_ms >= self.queues[q as usize].expires_ms => {
                self.kill(q, Cause::Timeout, release);
                self.new_queue(now_ms, &info)
            }
            Some(q) => Some(q),
            None => self.new_queue(now_ms, &info),
        };
        let Some(q) = q else {
            return self.drop(h, Cause::Memory);
        };
        self.queue(q, info, cost, h, release)
    }

    fn drop(&mut self, h: H, c: Cause) -> Push<H> {
        self.stats.count(c);
        Push::Dropped(h, c)
    }

    fn new_queue(&mut self, now_ms: u64, info: &Info) -> Option<u32> {
        let q = self.free_queues.pop()?;
        let timeout = if info.key.v6 {
            self.limits.timeout_v6_ms
        } else {
            self.limits.timeout_v4_ms
        };
        let expires_ms = now_ms.saturating_add(timeout);
        self.next_expiry_ms = self.next_expiry_ms.min(expires_ms);
        self.queues[q as usize] = Queue {
            key: info.key,
            live: true,
            expires_ms,
            ..Queue::default()
        };
        self.index.insert(info.key, q);
        self.live += 1;
        Some(q)
    }

    /// `ip_frag_queue` / `nf_ct_frag6_queue`.
    fn queue(
        &mut self,
        q: u32,
        info: Info,
        cost: usize,
        h: H,
        release: &mut dyn FnMut(H, Cause),
    ) -> Push<H> {
        let v6 = info.key.v6;
        let offset = info.offset;
        let mut end = offset + info.data_len;
        let qu = self.queues[q as usize];
        if v6 && end > 65_535 {
            return self.drop(h, Cause::Corrupt);
        }
        if !info.more {
            if end < qu.len || (qu.last_in && end != qu.len) {
                return self.corrupt(q, h, release);
            }
            let qm = &mut self.queues[q as usize];
            qm.last_in = true;
            qm.len = end;
        } else {
            if end & 7 != 0 {
                if v6 {
                    // -EPROTO: the datagram goes; this fragment passes.
                    self.kill(q, Cause::DatagramDropped, release);
                    self.stats.passed += 1;
                    return Push::Whole(h);
                }
                end &= !7;
            }
            if end > qu.len {
                if qu.last_in {
                    return self.corrupt(q, h, release);
                }
                self.queues[q as usize].len = end;
            }
        }
        if end == offset {
            return self.corrupt(q, h, release);
        }
        match self.insert_place(q, offset, end) {
            Insert::Duplicate => return self.drop(h, Cause::Duplicate),
            Insert::Overlap => {
                self.kill(q, Cause::DatagramDropped, release);
                return self.drop(h, Cause::Overlap);
            }
            Insert::At { prev, run_head } => {
                let Some(f) = self.free_frags.pop() else {
                    return self.drop(h, Cause::Memory);
                };
                let qm = &mut self.queues[q as usize];
                let next = if prev == NIL {
                    std::mem::replace(&mut qm.head, f)
                } else {
                    std::mem::replace(&mut self.frags[prev as usize].next, f)
                };
                if qm.tail == NIL || end > self.frags[qm.tail as usize].end {
                    qm.tail = f;
                }
                qm.meat += end - offset;
                if offset == 0 {
                    qm.first_in = true;
                    qm.df = info.df;
                }
                self.frags[f as usize] = Frag {
                    offset,
                    end,
                    run_head,
                    next,
                    place: PlaceRaw {
                        l3_offset: info.l3_offset as u16,
                        data_at: info.data_at as u16,
                    },
                    cost: cost as u32,
                };
                self.handles[f as usize] = Some(h);
                self.mem += cost;
                self.stats.held += 1;
            }
        }
        let qu = self.queues[q as usize];
        if qu.first_in && qu.last_in && qu.meat == qu.len {
            return Push::Complete(Datagram(q));
        }
        Push::Held
    }

    /// A corrupt fragment: IPv4 drops its datagram too, IPv6 only it (and
    /// the queue it made, if nothing else is held).
    fn corrupt(&mut self, q: u32, h: H, release: &mut dyn FnMut(H, Cause)) -> Push<H> {
        let qu = &self.queues[q as usize];
        if !qu.key.v6 || qu.head == NIL {
            self.kill(q, Cause::DatagramDropped, release);
        }
        self.drop(h, Cause::Corrupt)
    }

    /// `inet_frag_queue_insert`: where [offset, end) goes among the
    /// datagram's fragments, by the kernel's runs.
    fn insert_place(&self, q: u32, offset: u32, end: u32) -> Insert {
        let qu = &self.queues[q as usize];
        if qu.tail == NIL {
            return Insert::At {
                prev: NIL,
                run_head: true,
            };
        }
        let last = &self.frags[qu.tail as usize];
        if last.end < end {
            // The common case: at the tail.
            if offset < last.end {
                return Insert::Overlap;
            }
            let prev = self.last_before(q, offset);
            return Insert::At {
                prev,
                run_head: offset != last.end,
            };
        }
        // Within the runs: a run that intersects decides.
        let mut i = qu.head;
        while i != NIL {
            let run_start = self.frags[i as usize].offset;
            let mut run_end = self.frags[i as usize].end;
            let mut j = self.frags[i as usize].next;
            while j != NIL && !self.frags[j as usize].run_head {
                run_end = self.frags[j as usize].end;
                j = self.frags[j as usize].next;
            }
            if offset < run_end && end > run_start {
                return if offset >= run_start && end <= run_end {
                    Insert::Duplicate
                } else {
                    Insert::Overlap
                };
            }
            i = j;
        }
        Insert::At {
            prev: self.last_before(q, offset),
            run_head: true,
        }
    }

    /// The last fragment starting before `offset` (NIL: none).
    fn last_before(&self, q: u32, offset: u32) -> u32 {
        let mut prev = NIL;
        let mut i = self.queues[q as usize].head;
        while i != NIL && self.frags[i as usize].offset < offset {
            prev = i;
            i = self.frags[i as usize].next;
        }
        prev
    }

    /// Drops queue `q` and what it holds.
    fn kill(&mut self, q: u32, cause: Cause, release: &mut dyn FnMut(H, Cause)) {
        let qu = &mut self.queues[q as usize];
        if !qu.live {
            return;
        }
        qu.live = false;
        let key = qu.key;
        let mut i = std::mem::replace(&mut qu.head, NIL);
        self.index.remove(&key);
        self.free_queues.push(q);
        self.live -= 1;
        while i != NIL {
            let next = self.frags[i as usize].next;
            if let Some(h) = self.free_frag(i) {
                self.stats.count(cause);
                release(h, cause);
            }
            i = next;
        }
    }

    fn free_frag(&mut self, i: u32) -> Option<H> {
        self.mem -= self.frags[i as usize].cost as usize;
        self.free_frags.push(i);
        self.handles[i as usize].take()
    }

    /// Drops the datagrams whose time is up (call it every few
    /// milliseconds, packets or not); returns how many. Looks through the
    /// queues only when the earliest deadline has passed.
    pub fn expire(&mut self, now_ms: u64, release: &mut dyn FnMut(H, Cause)) -> usize {
        if self.live == 0 || now_ms < self.next_expiry_ms {
            return 0;
        }
        let (mut expired, mut next) = (0, u64::MAX);
        for q in 0..self.queues.len() {
            let qu = &self.queues[q];
            if !qu.live {
                continue;
            }
            if now_ms >= qu.expires_ms {
                self.kill(q as u32, Cause::Timeout, release);
                expired += 1;
            } else {
                next = next.min(qu.expires_ms);
            }
        }
        self.next_expiry_ms = next;
        expired
    }

    /// Gives up every datagram (the caller is stopping): hands each held
    /// fragment to `each`, uncounted.
    pub fn clear(&mut self, mut each: impl FnMut(H)) {
        for q in 0..self.queues.len() {
            if self.queues[q].live {
                self.end(Datagram(q as u32), |h, _| each(h));
            }
        }
    }

    /// Writes datagram `d` into `out` (cleared first): the first fragment's
    /// link-layer and IP headers (fragment fields cleared, lengths and the
    /// IPv4 header checksum set; IPv6's Fragment header removed), then
    /// every fragment's data. `frame` gives a held handle's frame. `Err`:
    /// the datagram is too big (IPv4 over 65,535 bytes): finish it and drop
    /// its fragments.
    pub fn assemble<'s>(
        &'s self,
        d: Datagram,
        frame: impl Fn(&'s H) -> &'s [u8],
        out: &mut Vec<u8>,
    ) -> Result<Assembled, Cause> {
        let qu = &self.queues[d.0 as usize];
        out.clear();
        let first = &self.frags[qu.head as usize];
        let Some(f0) = self.handles[qu.head as usize].as_ref() else {
            return Err(Cause::Corrupt);
        };
        let f0 = frame(f0);
        let l3 = first.place.l3_offset as usize;
        let data_at = first.place.data_at as usize;
        let total = if qu.key.v6 {
            // The unfragmentable part: up to the Fragment header.
            data_at - 8 - l3 + qu.len as usize
        } else {
            data_at - l3 + qu.len as usize
        };
        if total > 65_535 + if qu.key.v6 { 40 } else { 0 } {
            return Err(Cause::TooBig);
        }
        let head_len = if qu.key.v6 { data_at - 8 } else { data_at };
        out.extend_from_slice(&f0[..head_len]);
        let mut i = qu.head;
        while i != NIL {
            let f = &self.frags[i as usize];
            let Some(h) = self.handles[i as usize].as_ref() else {
                return Err(Cause::Corrupt);
            };
            let bytes = frame(h);
            let at = f.place.data_at as usize;
            out.extend_from_slice(&bytes[at..at + (f.end - f.offset) as usize]);
            i = f.next;
        }
        let ip = &mut out[l3..];
        if qu.key.v6 {
            ip[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            // The header that named the Fragment header names what followed it.
            let (nh_at, fh) = find_frag_header(&f0[l3..data_at]).ok_or(Cause::Corrupt)?;
            ip[nh_at] = f0[l3 + fh];
        } else {
            ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            ip[6..8].copy_from_slice(&(if qu.df { 0x4000u16 } else { 0 }).to_be_bytes());
            ip[10..12].copy_from_slice(&[0, 0]);
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let c = checksum::checksum(&ip[..ihl]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        Ok(Assembled {
            l3_offset: l3,
            data_offset: head_len,
        })
    }

    /// Ends datagram `d`: hands each of its fragments to `each`, in offset
    /// order, with where its data goes.
    pub fn finish(&mut self, d: Datagram, each: impl FnMut(H, Place)) {
        if self.queues[d.0 as usize].live {
            self.stats.reassembled += 1;
        }
        self.end(d, each);
    }

    fn end(&mut self, d: Datagram, mut each: impl FnMut(H, Place)) {
        let qu = &mut self.queues[d.0 as usize];
        if !qu.live {
            return;
        }
        qu.live = false;
        let (key, v6) = (qu.key, qu.key.v6);
        let mut i = std::mem::replace(&mut qu.head, NIL);
        self.index.remove(&key);
        self.free_queues.push(d.0);
        self.live -= 1;
        while i != NIL {
            let f = self.frags[i as usize];
            if let Some(h) = self.free_frag(i) {
                each(
                    h,
                    Place {
                        l3_offset: f.place.l3_offset,
                        data_at: f.place.data_at,
                        offset: f.offset as u16,
                        len: (f.end - f.offset) as u16,
                        v6,
                    },
                );
            }
            i = f.next;
        }
    }
}

enum Insert {
    Duplicate,
    Overlap,
    At { prev: u32, run_head: bool },
}

/// The IPv6 packet `pkt`'s Fragment header, as `find_prev_fhdr` finds it
/// (only extension headers before it): the offset of the byte that names
/// it, and its own offset. None: no Fragment header.
fn find_frag_header(pkt: &[u8]) -> Option<(usize, usize)> {
    let (mut nh_at, mut off) = (6, 40);
    let mut next = *pkt.get(6)?;
    while next != NEXTHDR_FRAGMENT {
        if !matches!(
            next,
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH
        ) {
            return None;
        }
        let h = pkt.get(off..off + 2)?;
        nh_at = off;
        off += ext_len(next, h);
        next = h[0];
    }
    (off + 8 <= pkt.len()).then_some((nh_at, off))
}

const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;

fn ext_len(kind: u8, hdr: &[u8]) -> usize {
    match kind {
        NEXTHDR_FRAGMENT => 8,
        NEXTHDR_AUTH => (usize::from(hdr[1]) + 2) * 4,
        _ => (usize::from(hdr[1]) + 1) * 8,
    }
}

/// Reads the fragment fields of `frame`, whose datagrams are reassembled
/// in zone `zone` (the kernel's defrag user is the conntrack zone).
pub fn read(frame: &[u8], zone: u16) -> Read {
    let Some((l3, ethertype)) = l3_offset(frame) else {
        return Read::NotFragment;
    };
    match ethertype {
        0x0800 => read_v4(frame, l3, zone),
        0x86dd => read_v6(frame, l3, zone),
        _ => Read::NotFragment,
    }
}

/// After Ethernet and up to two VLAN tags: the IP header's offset and ethertype.
fn l3_offset(frame: &[u8]) -> Option<(usize, u16)> {
    let mut off = 12;
    for _ in 0..3 {
        let t = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
        match t {
            0x8100 | 0x88a8 | 0x9100 => off += 4,
            _ => return Some((off + 2, t)),
        }
    }
    None
}

fn read_v4(frame: &[u8], l3: usize, zone: u16) -> Read {
    let Some(ip) = frame.get(l3..l3 + 20) else {
        return Read::NotFragment;
    };
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let flags_off = u16::from_be_bytes([ip[6], ip[7]]);
    let (more, offset) = (flags_off & 0x2000 != 0, u32::from(flags_off & 0x1fff) * 8);
    // What ip_rcv would drop never reaches defrag: the normal path drops it.
    if ip[0] >> 4 != 4 || ihl < 20 || total < ihl || l3 + total > frame.len() {
        return Read::NotFragment;
    }
    if !more && offset == 0 {
        return Read::NotFragment;
    }
    if checksum::checksum(&frame[l3..l3 + ihl]) != 0 {
        return Read::NotFragment;
    }
    let mut key = Key {
        v6: false,
        src: [0; 16],
        dst: [0; 16],
        id: u32::from(u16::from_be_bytes([ip[4], ip[5]])),
        proto: ip[9],
        zone,
    };
    key.src[..4].copy_from_slice(&ip[12..16]);
    key.dst[..4].copy_from_slice(&ip[16..20]);
    Read::Fragment(Info {
        key,
        l3_offset: l3,
        data_at: l3 + ihl,
        offset,
        data_len: (total - ihl) as u32,
        more,
        df: flags_off & 0x4000 != 0,
    })
}

fn read_v6(frame: &[u8], l3: usize, zone: u16) -> Read {
    let Some(ip) = frame.get(l3..l3 + 40) else {
        return Read::NotFragment;
    };
    let payload = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
    // A jumbogram has no Fragment header.
    if ip[0] >> 4 != 6 || payload == 0 || l3 + 40 + payload > frame.len() {
        return Read::NotFragment;
    }
    let pkt = &frame[l3..l3 + 40 + payload];
    let Some((_, off)) = find_frag_header(pkt) else {
        return Read::NotFragment;
    };
    let fh = &pkt[off..off + 8];
    let flags_off = u16::from_be_bytes([fh[2], fh[3]]);
    let (offset, more) = (u32::from(flags_off & 0xfff8), flags_off & 1 != 0);
    if offset == 0 && !more {
        // An atomic fragment (RFC 6946): whole by itself.
        return Read::NotFragment;
    }
    if offset == 0 && thdr_truncated(pkt, off + 8, fh[0]) {
        return Read::Pass;
    }
    let mut key = Key {
        v6: true,
        src: [0; 16],
        dst: [0; 16],
        id: u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]),
        proto: 0,
        zone,
    };
    key.src.copy_from_slice(&pkt[8..24]);
    key.dst.copy_from_slice(&pkt[24..40]);
    Read::Fragment(Info {
        key,
        l3_offset: l3,
        data_at: l3 + off + 8,
        offset,
        data_len: (pkt.len() - off - 8) as u32,
        more,
        df: false,
    })
}

/// `ipv6frag_thdr_truncated`: whether a first fragment ends before its
/// upper-layer header (TCP 20 bytes, UDP 8, ICMPv6 8, others 1) does,
/// after any extension headers that follow the Fragment header.
fn thdr_truncated(pkt: &[u8], mut off: usize, mut next: u8) -> bool {
    loop {
        match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH => {
                let Some(h) = pkt.get(off..off + 2) else {
                    // ipv6_skip_exthdr fails: not judged truncated.
                    return false;
                };
                off += ext_len(next, h);
                next = h[0];
            }
            NEXTHDR_FRAGMENT => return false,
            _ => break,
        }
    }
    let need = match next {
        6 => 20,
        17 => 8,
        58 => 8,
        _ => 1,
    };
    off + need > pkt.len()
}

/// Writes what the translated datagram `whole` (as [`Defrag::assemble`]
/// laid it out) holds for one of its fragments into that fragment's frame:
/// the addresses (and the IPv4 header checksum) and its share of the data,
/// ports and checksums included. The fragment keeps its own header fields
/// otherwise (TTL, id, offset, flags).
pub fn refragment(whole: &[u8], at: &Assembled, frag: &mut [u8], place: &Place) {
    let (wl3, fl3) = (at.l3_offset, place.l3_offset as usize);
    if place.v6 {
        frag[fl3 + 8..fl3 + 40].copy_from_slice(&whole[wl3 + 8..wl3 + 40]);
    } else {
        frag[fl3 + 12..fl3 + 20].copy_from_slice(&whole[wl3 + 12..wl3 + 20]);
        let ihl = usize::from(frag[fl3] & 0x0f) * 4;
        frag[fl3 + 10..fl3 + 12].copy_from_slice(&[0, 0]);
        let c = checksum::checksum(&frag[fl3..fl3 + ihl]);
        frag[fl3 + 10..fl3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    let src = at.data_offset + place.offset as usize;
    let dst = place.data_at as usize;
    let n = place.len as usize;
    frag[dst..dst + n].copy_from_slice(&whole[src..src + n]);
}

#[cfg(test)]
mod tests;

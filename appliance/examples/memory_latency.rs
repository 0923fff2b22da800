//! What one random access into a table of a given size costs on this
//! machine, by the pages under it: a chase of dependent loads through a
//! random cycle of cache lines, over working sets from 4 MiB to the
//! largest size asked for, on the hugetlb pools (1 GiB pages where that
//! pool has free ones, else 2 MiB: as `ctgate` places its table), on
//! transparent huge pages, and on 4 KiB pages.
//!
//! Then independent accesses (the memory system's throughput for random
//! lines); a model of the engine's burst (stage 1 prefetching each
//! packet's bucket line, stage 2 its record line, stage 3 reading it and
//! working), with two lines per packet and with one; and two dependent
//! accesses at a time (as a packet reads its bucket, then its record), in
//! one 4 KiB page or in two random ones.
//!
//! `memory_latency [MAX_MIB]` (default 2048). What the two accesses in one
//! page save is the page walks' share of an access (on a virtual machine,
//! the host's walks remain whatever the guest's pages); the rest of the
//! growth beyond the last-level cache is the memory's own latency
//! (docs/performance.md, step 22). `memory_latency MAX_MIB rolling`
//! compares the burst model with a rolling pipeline over the stream of
//! packets, by lookahead (docs/performance.md, step 24).
use appliance::dpdk::huge::{HugeAlloc, TablePages};
use ctcore::table::Memory;
use std::time::Instant;

/// The placement of `ctgate`'s table, for the "reserved" runs.
#[global_allocator]
static ALLOC: HugeAlloc<std::alloc::System> = HugeAlloc(std::alloc::System);

/// u64s per 64-byte line: the chase reads the first of each line.
const LINE: usize = 8;
const LOADS: usize = 4_000_000;

/// A region of `len` bytes placed by `pages` (None: plain 4 KiB pages).
fn region(len: usize, pages: Option<&mut TablePages>) -> (Vec<u64>, String) {
    let n = len / 8;
    let Some(pages) = pages else {
        return (vec![0; n], "4 KiB pages".into());
    };
    pages.placing(len);
    let mut v: Vec<u64> = Vec::with_capacity(n);
    pages.reserved(v.as_ptr() as usize, len);
    v.resize(n, 0);
    let kind = if pages.on_1g > 0 {
        "1 GiB pages (reserved)"
    } else if pages.on_2m > 0 {
        "2 MiB pages (reserved)"
    } else if pages.transparent > 0 {
        "transparent huge pages"
    } else {
        "4 KiB pages (no huge pages to be had)"
    };
    (v, kind.into())
}

/// The next value of an xorshift64 sequence (the access patterns' random
/// source).
fn xorshift(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

/// Nanoseconds per dependent load through a random cycle over the first
/// `lines` lines of `v`.
fn chase(v: &mut [u64], lines: usize, rng: &mut u64) -> f64 {
    let mut next = || xorshift(rng);
    // Sattolo's algorithm: one cycle through every line.
    let mut order: Vec<u32> = (0..lines as u32).collect();
    for i in (1..lines).rev() {
        let j = (next() % i as u64) as usize;
        order.swap(i, j);
    }
    for k in 0..lines {
        v[order[k] as usize * LINE] = u64::from(order[(k + 1) % lines]) * LINE as u64;
    }
    let mut at = order[0] as usize * LINE;
    for _ in 0..LOADS / 10 {
        at = v[at] as usize;
    }
    let start = Instant::now();
    for _ in 0..LOADS {
        at = v[at] as usize;
    }
    let ns = start.elapsed().as_nanos() as f64 / LOADS as f64;
    std::hint::black_box(at);
    ns
}

/// Nanoseconds per step of a chase where each step reads two dependent
/// lines, as a packet reads its bucket and then its record: the second in
/// the same 4 KiB page as the first (`near`), or in a random one. The
/// cycle runs through the first line of each page; the second line is the
/// page's last (near) or that of the page `pages / 2` further on.
fn chase_pairs(v: &mut [u64], pages: usize, near: bool, rng: &mut u64) -> f64 {
    const PAGE: usize = 4096 / 8;
    let mut next = || xorshift(rng);
    let mut order: Vec<u32> = (0..pages as u32).collect();
    for i in (1..pages).rev() {
        let j = (next() % i as u64) as usize;
        order.swap(i, j);
    }
    let second = |p: usize| {
        if near {
            p * PAGE + PAGE - LINE
        } else {
            ((p + pages / 2) % pages) * PAGE + PAGE - LINE
        }
    };
    for k in 0..pages {
        let (p, q) = (order[k] as usize, order[(k + 1) % pages] as usize);
        // The first line names the second; the second names the next
        // step's first.
        v[p * PAGE] = second(p) as u64;
        v[second(p)] = (q * PAGE) as u64;
    }
    let mut at = order[0] as usize * PAGE;
    for _ in 0..LOADS / 10 {
        at = v[v[at] as usize] as usize;
    }
    let start = Instant::now();
    for _ in 0..LOADS / 2 {
        at = v[v[at] as usize] as usize;
    }
    let ns = start.elapsed().as_nanos() as f64 / (LOADS / 2) as f64;
    std::hint::black_box(at);
    ns
}

/// Nanoseconds per line read when the reads do not depend on each other
/// (as a burst's bucket loads): the memory system's throughput for random
/// lines over the first `lines` lines of `v`, with as many misses in
/// flight as the core keeps.
fn independent(v: &[u64], lines: usize, rng: &mut u64) -> f64 {
    let mut next = || xorshift(rng);
    let at: Vec<u32> = (0..LOADS).map(|_| (next() % lines as u64) as u32).collect();
    let mut sum = 0u64;
    let start = Instant::now();
    for &a in &at {
        sum = sum.wrapping_add(v[a as usize * LINE]);
    }
    let ns = start.elapsed().as_nanos() as f64 / LOADS as f64;
    std::hint::black_box(sum);
    ns
}

/// The models' buckets: line `b` of the first `half` lines names a random
/// record line of the second half.
fn link_buckets(v: &mut [u64], half: usize, rng: &mut u64) {
    for b in 0..half {
        v[b * LINE] = ((half + (xorshift(rng) % half as u64) as usize) * LINE) as u64;
    }
}

/// The models' work: `steps` dependent multiply steps.
fn spin(mut x: u64, steps: u32) -> u64 {
    for _ in 0..steps {
        x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(7);
    }
    x
}

/// A model of the engine's burst at a table of `lines` lines (the first
/// half buckets, the second records), in nanoseconds per packet: bursts
/// of 32 random packets; with `two` lines per packet, stage 1 prefetches
/// each packet's bucket line, stage 2 reads it (it names a record line)
/// and prefetches that, stage 3 reads the record; with one line, stage 1
/// prefetches the record line itself (found from the hash) and stage 2
/// has nothing to do. Each stage does `work[stage]` dependent multiply
/// steps per packet besides, standing for the parse and hash (stage 1),
/// the signature match (stage 2) and the tracking (stage 3).
fn burst_model(v: &mut [u64], lines: usize, two: bool, work: [u32; 3], rng: &mut u64) -> f64 {
    use appliance::dpdk::HwPrefetch;
    use ctcore::table::Prefetch;
    const BURST: usize = 32;
    let half = lines / 2;
    link_buckets(v, half, rng);
    let mut next = || xorshift(rng);
    let at: Vec<u32> = (0..LOADS / 2)
        .map(|_| {
            let r = (next() % half as u64) as u32;
            if two {
                r
            } else {
                r + half as u32
            }
        })
        .collect();
    let line = |v: &[u64], i: usize| &v[i] as *const u64 as *const u8;
    let mut acc = 0u64;
    let start = Instant::now();
    for burst in at.chunks(BURST) {
        for &a in burst {
            acc ^= spin(u64::from(a) | 1, work[0]);
            HwPrefetch::read(line(v, a as usize * LINE));
        }
        let mut rec = [0usize; BURST];
        for (k, &a) in burst.iter().enumerate() {
            acc ^= spin(u64::from(a) | 3, work[1]);
            rec[k] = if two {
                let r = v[a as usize * LINE] as usize;
                HwPrefetch::read(line(v, r));
                r
            } else {
                a as usize * LINE
            };
        }
        for &r in &rec[..burst.len()] {
            acc ^= spin(v[r] | 1, work[2]);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / at.len() as f64;
    std::hint::black_box(acc);
    ns
}

/// The same work as [`burst_model`] with two lines per packet, as a
/// rolling pipeline over the stream of packets instead of bursts in three
/// stages: at each step, packet `j + 2d` is parsed and its bucket
/// prefetched, packet `j + d`'s bucket is read and its record prefetched,
/// and packet `j` is tracked. Each line has `d` packets' work to arrive,
/// and the loads in flight stay at about `2d` instead of a burst's 32.
fn rolling_model(v: &mut [u64], lines: usize, work: [u32; 3], d: usize, rng: &mut u64) -> f64 {
    use appliance::dpdk::HwPrefetch;
    use ctcore::table::Prefetch;
    let half = lines / 2;
    link_buckets(v, half, rng);
    let mut next = || xorshift(rng);
    let at: Vec<u32> = (0..LOADS / 2)
        .map(|_| (next() % half as u64) as u32)
        .collect();
    let line = |v: &[u64], i: usize| &v[i] as *const u64 as *const u8;
    let n = at.len();
    let mut rec = vec![0usize; n];
    let mut acc = 0u64;
    let start = Instant::now();
    for j in 0..n + 2 * d {
        if j < n {
            let a = at[j];
            acc ^= spin(u64::from(a) | 1, work[0]);
            HwPrefetch::read(line(v, a as usize * LINE));
        }
        if j >= d && j - d < n {
            let a = at[j - d];
            acc ^= spin(u64::from(a) | 3, work[1]);
            let r = v[a as usize * LINE] as usize;
            HwPrefetch::read(line(v, r));
            rec[j - d] = r;
        }
        if j >= 2 * d {
            acc ^= spin(v[rec[j - 2 * d]] | 1, work[2]);
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    std::hint::black_box(acc);
    ns
}

fn main() {
    let max_mib: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2048)
        .max(4);
    let len = max_mib << 20;
    let mut sizes = vec![4usize];
    while sizes[sizes.len() - 1] * 4 <= max_mib {
        sizes.push(sizes[sizes.len() - 1] * 4);
    }
    if sizes[sizes.len() - 1] != max_mib {
        sizes.push(max_mib);
    }
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut reserved = TablePages::new(true);
    if std::env::args().nth(2).as_deref() == Some("rolling") {
        // The burst in three stages against the rolling pipeline, by
        // lookahead, on the reserved pages, in alternating rounds.
        let (mut v, kind) = region(len, Some(&mut reserved));
        let work = [20, 15, 45];
        for round in 0..3 {
            let b = burst_model(&mut v, len / 64, true, work, &mut rng);
            let cells: Vec<String> = [2, 4, 6, 8, 12]
                .iter()
                .map(|&d| {
                    let r = rolling_model(&mut v, len / 64, work, d, &mut rng);
                    format!("d={d} {r:.1}")
                })
                .collect();
            let small = (4 << 20) / 64;
            let bs = burst_model(&mut v, small, true, work, &mut rng);
            let rs = rolling_model(&mut v, small, work, 4, &mut rng);
            println!(
                "{kind}, round {round}: {work:?}, ns per packet over {max_mib} MiB: bursts {b:.1}, rolling {} (4 MiB: bursts {bs:.1}, rolling d=4 {rs:.1})",
                cells.join(", ")
            );
        }
        return;
    }
    let mut transparent = TablePages::new(false);
    for pages in [Some(&mut reserved), Some(&mut transparent), None] {
        let (mut v, kind) = region(len, pages);
        let row: Vec<String> = sizes
            .iter()
            .map(|&mib| {
                let ns = chase(&mut v, (mib << 20) / 64, &mut rng);
                format!("{mib} MiB {ns:.1}")
            })
            .collect();
        println!(
            "{kind}: ns per random access, by working set: {}",
            row.join(", ")
        );
        let row: Vec<String> = sizes
            .iter()
            .map(|&mib| {
                let ns = independent(&v, (mib << 20) / 64, &mut rng);
                format!("{mib} MiB {ns:.1}")
            })
            .collect();
        println!(
            "{kind}: ns per independent random access, by working set: {}",
            row.join(", ")
        );
        // The engine's burst, modelled: the in-cache figure and the whole
        // region's, with two lines per packet and with one.
        for work in [[0, 0, 0], [20, 15, 45]] {
            let small = (4 << 20) / 64;
            let cells: Vec<String> = [true, false]
                .iter()
                .map(|&two| {
                    let a = burst_model(&mut v, small, two, work, &mut rng);
                    let b = burst_model(&mut v, len / 64, two, work, &mut rng);
                    format!(
                        "{} line(s) {a:.1} -> {b:.1} ({:.2}x)",
                        if two { 2 } else { 1 },
                        b / a
                    )
                })
                .collect();
            println!(
                "{kind}: bursts of 32, {work:?} steps of work a packet by stage, ns per packet at 4 MiB -> {max_mib} MiB: {}",
                cells.join(", ")
            );
        }
        let pages = len / 4096;
        let near = chase_pairs(&mut v, pages, true, &mut rng);
        let far = chase_pairs(&mut v, pages, false, &mut rng);
        println!(
            "{kind}: ns per two dependent accesses over {max_mib} MiB: \
             {near:.1} in one 4 KiB page, {far:.1} in two"
        );
    }
}

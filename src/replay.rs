//! `ctgate replay`: the engine run offline over captures, clocked by their
//! timestamps. Prints the final table as `conntrack -L -o extended` does
//! (stdout) and the counters (stderr); forwarded frames, translated, go to `--out`.
//!
//! The capture stands for traffic entering port 0 and leaving by port 1 (the
//! config's second `[[port]]`, whose address masquerade uses, if there is one).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use appliance::config::conntrack;
use appliance::config::Config;
use appliance::pcap;
use ctcore::conn::Listed;
use ctcore::defrag::{self, refragment, Defrag, Push};
use ctcore::engine::{CtResult, Decision, Egress, Engine, EngineConfig, Pkt, Tunables};
use ctcore::forward::{classify_addrs, RouteClass};
use ctcore::listing::format_conn;
use ctcore::nat::rewrite::{apply_translation, ChecksumMode};
use ctcore::policy::{Action, Policy};
use ctcore::tuple::Family;

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Every packet at the first packet's timestamp (like `tcpreplay --topspeed` into a kernel).
    #[arg(long)]
    pub topspeed: bool,
    /// Config whose [conntrack], [[policy]], [[nat]] and [[pool]] sections apply
    /// (ports are optional; the capture enters port 0 and leaves by port 1).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Put each VLAN's traffic in its own zone (zone = outermost VLAN id).
    #[arg(long)]
    pub vlan_zones: bool,
    /// Table capacity (nf_conntrack_max); overrides the config's.
    #[arg(long)]
    pub max_conns: Option<u32>,
    /// Do not verify L4 checksums (nf_conntrack_checksum=0).
    #[arg(long)]
    pub no_checksum: bool,
    /// Workers (table stripes): each packet is processed by the worker
    /// software dispatch gives it (`Engine::dispatch`), with NAT ports
    /// steered as on a multi-worker appliance.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub workers: u32,
    /// Write the frames ctgate forwards (translated) to this capture.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Captures, replayed one after the other.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

/// Counters of a replay beyond the engine's own.
#[derive(Debug, Default)]
struct ReplayCounts {
    read: u64,
    forwarded: u64,
    local: u64,
    dropped_header: u64,
    dropped_route: u64,
    dropped_policy: u64,
    dropped_ct: u64,
    /// Fragments reassembly dropped (overlaps, duplicates, corrupt, ...).
    dropped_defrag: u64,
}

/// Applies a forwarded frame's NAT rewrite and its conntrack helper's
/// change (the frame may grow or shrink); false if the frame cannot take
/// them.
fn rewrite_frame(frame: &mut Vec<u8>, r: &CtResult) -> bool {
    let Ok(p) = &r.parsed else { return true };
    if let Some(rw) = &r.rewrite {
        if apply_translation(frame, p, rw, ChecksumMode::Incremental).is_err() {
            return false;
        }
    }
    if let Some(fix) = &r.fix {
        let before = frame.len();
        frame.resize(fix.frame_len(p, before).max(before), 0);
        match ctcore::helper::apply_fix(frame, p, fix, ChecksumMode::Incremental) {
            Ok(n) => frame.truncate(n),
            Err(_) => return false,
        }
    }
    true
}

/// What a replay runs each packet (or reassembled datagram) through.
struct Ctx<'a> {
    engine: &'a Engine,
    policy: &'a Policy,
    egress_addr: [Option<ctcore::tuple::Addr>; 2],
}

impl Ctx<'_> {
    /// Tracks `frame` as it enters port 0: routing, policy, conntrack, NAT
    /// (the rewrite applied to `frame` when `rewrite` is set). True if it is
    /// forwarded.
    fn one(
        &self,
        w: &mut ctcore::engine::Worker,
        now_ms: u64,
        zone: u16,
        frame: &mut Vec<u8>,
        counts: &mut ReplayCounts,
        rewrite: bool,
    ) -> bool {
        let (engine, policy, egress_addr) = (self.engine, self.policy, self.egress_addr);
        let mut result = [CtResult::default()];
        let pkts = [Pkt::new(frame, zone, 0)];
        let mut class = RouteClass::Drop("bad_header");
        let mut refused = false;
        engine.process_burst(w, now_ms, &pkts, &mut result, |_, r| {
            let Ok(p) = &r.parsed else {
                return Decision::Drop;
            };
            class = classify_addrs(p.family, &p.src, r.route_dst().unwrap_or(&p.dst), p.ttl);
            if let RouteClass::Drop(_) = class {
                return Decision::Drop;
            }
            let mut mark = None;
            let mut helper = ctcore::helper::Helper::None;
            if class == RouteClass::Forward {
                let (action, rule) = policy.evaluate(
                    0,
                    1,
                    r.ctinfo,
                    r.dnat(),
                    r.mark,
                    ctcore::policy::packet_l4(p),
                );
                if action == Action::Drop {
                    refused = true;
                    return Decision::Drop;
                }
                mark = policy.set_mark(rule);
                helper = policy.helper(rule);
            }
            if class == RouteClass::Local {
                return Decision::Local;
            }
            let addr = if p.family == Family::V4 {
                egress_addr[0]
            } else {
                egress_addr[1]
            };
            Decision::Accept(Egress {
                port: 1,
                addr,
                mark,
                helper,
                cache: 0,
            })
        });
        let r = &result[0];
        if r.parsed.is_err() {
            counts.dropped_header += 1;
        } else if r.ct_drop.is_some() {
            counts.dropped_ct += 1;
        } else if refused {
            counts.dropped_policy += 1;
        } else {
            match class {
                RouteClass::Drop(_) => counts.dropped_route += 1,
                RouteClass::Local => counts.local += 1,
                RouteClass::Forward => {
                    if rewrite && !rewrite_frame(frame, r) {
                        counts.dropped_header += 1;
                        return false;
                    }
                    counts.forwarded += 1;
                    return true;
                }
            }
        }
        false
    }
}

/// The engine, policy and egress address a replay runs with.
fn setup(args: &ReplayArgs) -> anyhow::Result<(Engine, Policy, [Option<ctcore::tuple::Addr>; 2])> {
    const SEED: u64 = 0x00c7_6a7e_5eed;
    let (mut ecfg, policy, nat, egress) = match &args.config {
        Some(path) => {
            let cfg = Config::load_engine_only(path)?;
            let egress = [
                conntrack::port_addr(&cfg, 1, false),
                conntrack::port_addr(&cfg, 1, true),
            ];
            (
                conntrack::engine_config(&cfg, SEED)?,
                conntrack::policy(&cfg)?,
                conntrack::nat(&cfg)?,
                egress,
            )
        }
        None => (
            EngineConfig {
                capacity_conns: 262_144,
                seed: SEED,
                tunables: Tunables::default(),
            },
            Policy::default(),
            None,
            [None, None],
        ),
    };
    if let Some(m) = args.max_conns {
        ecfg.capacity_conns = m;
    }
    if args.no_checksum {
        ecfg.tunables.checksum = false;
    }
    let mut engine = Engine::build(ecfg, nat, args.workers.next_power_of_two(), &mut ());
    if policy.uses_helpers() {
        engine = engine.with_helpers();
    }
    Ok((engine, policy, egress))
}

pub fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let mut records = Vec::new();
    for f in &args.files {
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        let recs = pcap::parse(&bytes).with_context(|| format!("{}", f.display()))?;
        records.extend(recs);
    }
    let (engine, policy, egress_addr) = setup(&args)?;
    // One worker per stripe (the stripe count is the worker count rounded
    // up to a power of two: each stripe has its worker).
    let stripes = engine.table().stripe_count();
    let mut workers: Vec<_> = (0..stripes)
        .map(|s| {
            let mut w = engine.worker(0);
            if stripes > 1 {
                w.reply_steering = Some(engine.reply_steering(s, stripes));
            }
            w
        })
        .collect();
    let mut out = match &args.out {
        Some(p) => Some(pcap::Writer::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        ))?),
        None => None,
    };
    let t0 = records.first().map(|r| r.ts_ns / 1_000_000).unwrap_or(0);
    let mut now_ms = t0;
    let mut counts = ReplayCounts::default();
    let ctx = Ctx {
        engine: &engine,
        policy: &policy,
        egress_addr,
    };
    // Fragments are reassembled first, as nf_defrag does before conntrack:
    // per worker (all fragments of a datagram are dispatched to one).
    let mut defrags: Vec<Defrag<usize>> = (0..stripes)
        .map(|_| Defrag::new(defrag::Limits::default()))
        .collect();
    let mut whole: Vec<u8> = Vec::with_capacity(65_536 + 128);
    let mut held = Vec::new();
    for ri in 0..records.len() {
        counts.read += 1;
        if !args.topspeed {
            now_ms = now_ms.max(records[ri].ts_ns / 1_000_000);
        }
        let zone = if args.vlan_zones {
            vlan_zone(&records[ri].data)
        } else {
            0
        };
        let wi = engine.dispatch(&records[ri].data, zone) as usize;
        let dropped = &mut counts.dropped_defrag;
        let mut release = |_: usize, _: defrag::Cause| *dropped += 1;
        defrags[wi].expire(now_ms, &mut release);
        let frame = &records[ri].data;
        let (read, cost) = (defrag::read(frame, zone), frame.len());
        match defrags[wi].push(now_ms, read, cost, ri, &mut release) {
            Push::Held => {}
            Push::Dropped(_, _) => counts.dropped_defrag += 1,
            Push::Whole(_) => {
                let rec = &mut records[ri];
                let before = rec.data.len();
                if ctx.one(
                    &mut workers[wi],
                    now_ms,
                    zone,
                    &mut rec.data,
                    &mut counts,
                    out.is_some(),
                ) {
                    if let Some(o) = out.as_mut() {
                        // A helper's change may have grown or shrunk the frame.
                        let orig_len =
                            (rec.orig_len as usize + rec.data.len()).saturating_sub(before) as u32;
                        o.write(rec.ts_ns, orig_len, &rec.data)?;
                    }
                }
            }
            Push::Complete(dg) => {
                let recs = &records;
                let at = defrags[wi].assemble(dg, |h: &usize| recs[*h].data.as_slice(), &mut whole);
                held.clear();
                defrags[wi].finish(dg, |h, place| held.push((h, place)));
                let Ok(at) = at else {
                    counts.dropped_defrag += held.len() as u64;
                    continue;
                };
                let whole_len = whole.len();
                if ctx.one(
                    &mut workers[wi],
                    now_ms,
                    zone,
                    &mut whole,
                    &mut counts,
                    out.is_some(),
                ) {
                    if whole.len() != whole_len {
                        // A helper changed the datagram's length: its
                        // fragments cannot carry it (dropped, as a frame
                        // that cannot be rewritten).
                        counts.forwarded -= 1;
                        counts.dropped_header += 1;
                        continue;
                    }
                    if let Some(o) = out.as_mut() {
                        for (h, place) in &held {
                            let rec = &mut records[*h];
                            refragment(&whole, &at, &mut rec.data, place);
                            o.write(rec.ts_ns, rec.orig_len, &rec.data)?;
                        }
                    }
                }
            }
        }
    }
    if let Some(o) = out {
        o.finish()?;
    }
    let mut conns: Vec<Listed> = Vec::new();
    engine.snapshot(now_ms, |c| conns.push(*c));
    let mut lines: Vec<String> = conns.iter().map(|c| format_conn(c, now_ms)).collect();
    lines.sort();
    let stdout = std::io::stdout();
    let mut so = stdout.lock();
    for l in &lines {
        writeln!(so, "{l}")?;
    }
    let mut e = std::io::stderr().lock();
    writeln!(
        e,
        "replay: {} packets read, {} forwarded, {} delivered locally, dropped: {} bad header, {} by routing, {} by policy, {} by conntrack, {} by reassembly; {} connections",
        counts.read, counts.forwarded, counts.local, counts.dropped_header, counts.dropped_route, counts.dropped_policy, counts.dropped_ct, counts.dropped_defrag, lines.len()
    )?;
    let mut stats = ctcore::stats::CtStats::default();
    for d in &defrags {
        stats.defrag.add(&d.stats);
    }
    let mut nat_out_of_ports = 0;
    for w in &workers {
        stats.add(&w.stats);
        nat_out_of_ports += w.nat_out_of_ports;
    }
    let fields: Vec<String> = stats
        .fields()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    writeln!(
        e,
        "conntrack: {} nat_out_of_ports={}",
        fields.join(" "),
        nat_out_of_ports
    )?;
    if engine.helpers_enabled() {
        let mut h = ctcore::helper::HelperStats::default();
        for w in &workers {
            h.add(&w.helpers);
        }
        let fields: Vec<String> = h.fields().iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(e, "helpers: {}", fields.join(" "))?;
    }
    Ok(())
}

/// The outermost VLAN id of a frame, 0 if untagged.
fn vlan_zone(frame: &[u8]) -> u16 {
    match frame.get(12..16) {
        Some([0x81, 0x00, hi, lo]) | Some([0x88, 0xa8, hi, lo]) | Some([0x91, 0x00, hi, lo]) => {
            u16::from_be_bytes([*hi, *lo]) & 0x0fff
        }
        _ => 0,
    }
}

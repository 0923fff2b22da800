//! `ctgate ct ...` and `ctgate stats`: clients of a running ctgate's REST API,
//! shaped like `conntrack -L / -C / -D / -F / -E` and a counters table.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;

/// Where the API is and how to authenticate.
#[derive(Args, Debug, Clone)]
pub struct Api {
    /// The REST API of the running ctgate [default: the address it wrote
    /// beside its token file (rest-addr), else http://127.0.0.1:8080 without
    /// the token].
    #[arg(long, global = true, env = "CTGATE_API")]
    api: Option<String>,
    /// Bearer token for changes (delete, flush).
    #[arg(long, global = true, env = "CTGATE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// File holding the token [default: /run/ctgate/rest-token, which ctgate creates].
    #[arg(long, global = true, env = "CTGATE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
}

/// `conntrack`-style filters (the original direction unless `reply-` is said).
#[derive(Args, Debug, Clone, Default)]
pub struct Filter {
    /// Layer 3: ipv4 or ipv6.
    #[arg(short = 'f', long)]
    family: Option<String>,
    /// Layer 4 protocol (tcp, udp, icmp, icmpv6, sctp, gre, or a number).
    #[arg(short = 'p', long)]
    proto: Option<String>,
    /// Original source address (or prefix).
    #[arg(short = 's', long, visible_alias = "orig-src")]
    src: Option<String>,
    /// Original destination address (or prefix).
    #[arg(short = 'd', long, visible_alias = "orig-dst")]
    dst: Option<String>,
    /// Original source port.
    #[arg(long, visible_alias = "orig-port-src")]
    sport: Option<u16>,
    /// Original destination port.
    #[arg(long, visible_alias = "orig-port-dst")]
    dport: Option<u16>,
    /// Reply source address (or prefix).
    #[arg(short = 'r', long)]
    reply_src: Option<String>,
    /// Reply destination address (or prefix): the NAT address for masquerade.
    #[arg(short = 'q', long)]
    reply_dst: Option<String>,
    #[arg(long)]
    reply_port_src: Option<u16>,
    #[arg(long)]
    reply_port_dst: Option<u16>,
    /// Protocol state, e.g. ESTABLISHED, TIME_WAIT.
    #[arg(long)]
    state: Option<String>,
    #[arg(short = 'w', long)]
    zone: Option<u16>,
    /// Mark, `N` or `N/MASK`.
    #[arg(short = 'm', long)]
    mark: Option<String>,
    /// Status bits, comma separated: ASSURED, SEEN_REPLY, UNREPLIED, SRC_NAT, DST_NAT, ...
    #[arg(short = 'u', long)]
    status: Option<String>,
}

impl Filter {
    fn query(&self) -> Vec<(&'static str, String)> {
        let s = |v: &Option<String>| v.clone();
        let n = |v: &Option<u16>| v.map(|v| v.to_string());
        [
            ("family", s(&self.family)),
            ("proto", s(&self.proto)),
            ("src", s(&self.src)),
            ("dst", s(&self.dst)),
            ("sport", n(&self.sport)),
            ("dport", n(&self.dport)),
            ("reply-src", s(&self.reply_src)),
            ("reply-dst", s(&self.reply_dst)),
            ("reply-port-src", n(&self.reply_port_src)),
            ("reply-port-dst", n(&self.reply_port_dst)),
            ("state", s(&self.state)),
            ("zone", n(&self.zone)),
            ("mark", s(&self.mark)),
            ("status", s(&self.status)),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
    }
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `conntrack -L -o extended` lines.
    Extended,
    /// JSON (one array for lists, one object per line for events).
    Json,
}

#[derive(Args, Debug)]
pub struct CtArgs {
    #[command(flatten)]
    api: Api,
    #[command(subcommand)]
    cmd: CtCommand,
}

#[derive(Subcommand, Debug)]
enum CtCommand {
    /// List connections (conntrack -L).
    List {
        #[command(flatten)]
        filter: Filter,
        #[arg(short = 'o', long, value_enum, default_value = "extended")]
        output: Output,
    },
    /// Count connections (conntrack -C; with filters: those that match).
    Count {
        #[command(flatten)]
        filter: Filter,
    },
    /// Delete the connections that match (conntrack -D); needs at least one filter.
    Delete {
        #[command(flatten)]
        filter: Filter,
    },
    /// Delete every connection (conntrack -F).
    Flush,
    /// Print connection events as they happen (conntrack -E) until interrupted.
    Events {
        #[command(flatten)]
        filter: Filter,
        #[arg(short = 'o', long, value_enum, default_value = "extended")]
        output: Output,
    },
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    #[command(flatten)]
    api: Api,
    /// Refresh every SECONDS (default 1) with rates, until interrupted.
    #[arg(long, num_args = 0..=1, default_missing_value = "1", value_name = "SECONDS")]
    watch: Option<f64>,
    /// Print the raw JSON of /api/v1/stats.
    #[arg(long)]
    json: bool,
}

struct Client {
    base: String,
    token: Option<String>,
    /// Why the token was not sent (the API address was a guess).
    withheld: Option<String>,
    agent: ureq::Agent,
}

/// The API address a running ctgate wrote (`ADDR PID`), if that ctgate
/// still runs; otherwise why not.
fn written_addr(path: &std::path::Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = text.split_whitespace();
    let (Some(addr), Some(pid)) = (w.next(), w.next()) else {
        return Err(format!("{}: not ADDRESS PID", path.display()));
    };
    // The process that wrote it must still be a ctgate: a stale file must
    // not send the token to whatever took the port since.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !comm.trim().starts_with("ctgate") {
        return Err(format!(
            "{}: ctgate (pid {pid}) that wrote it is not running",
            path.display()
        ));
    }
    Ok(format!("http://{addr}"))
}

impl Client {
    fn new(api: &Api) -> Client {
        let token_file = api
            .token_file
            .clone()
            .unwrap_or_else(|| PathBuf::from(appliance::rest::DEFAULT_TOKEN_FILE));
        // The token goes only to an API named on the command line (or in
        // CTGATE_API) or written by the running ctgate, never to a guess.
        let (base, trusted, withheld) = match &api.api {
            Some(a) => (a.clone(), true, None),
            None => match written_addr(&appliance::rest::addr_file(Some(&token_file))) {
                Ok(a) => (a, true, None),
                Err(why) => (
                    format!("http://{}", appliance::rest::DEFAULT_BIND),
                    false,
                    Some(why),
                ),
            },
        };
        let token = if trusted {
            api.token.clone().or_else(|| {
                std::fs::read_to_string(&token_file)
                    .ok()
                    .map(|t| t.trim().to_owned())
            })
        } else {
            None
        };
        Client {
            base: base.trim_end_matches('/').to_owned(),
            token,
            withheld,
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .build(),
        }
    }

    fn request(&self, method: &str, path: &str, query: &[(&str, String)]) -> ureq::Request {
        let mut r = self.agent.request(method, &format!("{}{path}", self.base));
        for (k, v) in query {
            r = r.query(k, v);
        }
        if let Some(t) = &self.token {
            r = r.set("Authorization", &format!("Bearer {t}"));
        }
        r
    }

    fn call(&self, req: ureq::Request) -> anyhow::Result<ureq::Response> {
        match req.call() {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(code, resp)) => {
                let msg = resp
                    .into_json::<Value>()
                    .ok()
                    .and_then(|v| v["error"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                if code == 401 {
                    if let Some(why) = &self.withheld {
                        bail!("{code}: {msg}: the token is sent only to the API named by --api (or CTGATE_API) or written by the running ctgate, and {why}");
                    }
                    if self.token.is_none() {
                        bail!("{code}: {msg}: pass --token or CTGATE_TOKEN, or --token-file (ctgate creates {} unless [rest] sets a token)", appliance::rest::DEFAULT_TOKEN_FILE);
                    }
                }
                bail!("{code}: {msg}")
            }
            Err(e) => Err(anyhow!(
                "cannot reach ctgate's REST API at {}: {e} (is ctgate running? set --api or CTGATE_API)",
                self.base
            )),
        }
    }

    /// Every connection a listing endpoint (`/api/v1/conntrack`,
    /// `/api/v1/ha/cache`) has for `filter`, page by page.
    fn list_all(&self, path: &str, filter: &Filter) -> anyhow::Result<Vec<Value>> {
        let mut q = filter.query();
        q.push(("limit", appliance::rest::MAX_LIMIT.to_string()));
        let mut all = Vec::new();
        loop {
            let mut page_q = q.clone();
            page_q.push(("offset", all.len().to_string()));
            let v = self.json("GET", path, &page_q)?;
            let conns = v["connections"].as_array().cloned().unwrap_or_default();
            let total = v["total"].as_u64().unwrap_or(0) as usize;
            let got = conns.len();
            all.extend(conns);
            if got == 0 || all.len() >= total {
                return Ok(all);
            }
        }
    }

    fn json(&self, method: &str, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        self.call(self.request(method, path, query))?
            .into_json()
            .context("the REST API answered something that is not JSON")
    }
}

/// Connections as `conntrack -L` prints them (or JSON), and its closing
/// line on stderr naming `what` was listed.
fn print_listing(all: &[Value], output: Output, what: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(all)?)?,
        Output::Extended => {
            for conn in all {
                writeln!(out, "{}", conn["line"].as_str().unwrap_or_default())?;
            }
        }
    }
    eprintln!(
        "ctgate ({what}): {} flow entries have been shown.",
        all.len()
    );
    Ok(())
}

/// `ctgate ct ...`
pub fn ct(args: CtArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.api);
    match args.cmd {
        CtCommand::List { filter, output } => {
            let all = c.list_all("/api/v1/conntrack", &filter)?;
            print_listing(&all, output, "conntrack -L")?;
        }
        CtCommand::Count { filter } => {
            let v = c.json("GET", "/api/v1/conntrack/count", &filter.query())?;
            println!("{}", v["count"]);
        }
        CtCommand::Delete { filter } => {
            let q = filter.query();
            if q.is_empty() {
                bail!("ct delete needs at least one filter (e.g. -p tcp --dport 80); to delete everything: ctgate ct flush");
            }
            let v = c.json("DELETE", "/api/v1/conntrack", &q)?;
            eprintln!(
                "ctgate (conntrack -D): {} flow entries have been deleted.",
                v["deleted"]
            );
        }
        CtCommand::Flush => {
            let v = c.json("POST", "/api/v1/conntrack/flush", &[])?;
            eprintln!(
                "ctgate (conntrack -F): connection tracking table has been emptied ({} flow entries deleted).",
                v["deleted"]
            );
        }
        CtCommand::Events { filter, output } => {
            let resp = c.call(c.request("GET", "/api/v1/conntrack/events", &filter.query()))?;
            let mut out = std::io::stdout().lock();
            let mut event = String::new();
            for line in BufReader::new(resp.into_reader()).lines() {
                let line = line.context("the event stream broke")?;
                if let Some(e) = line.strip_prefix("event:") {
                    event = e.trim().to_owned();
                } else if let Some(d) = line.strip_prefix("data:") {
                    let v: Value =
                        serde_json::from_str(d.trim()).context("an event that is not JSON")?;
                    if event == "dropped" {
                        eprintln!(
                            "ctgate: {} events lost: this client fell behind",
                            v["dropped"]
                        );
                    } else if output == Output::Json {
                        writeln!(out, "{v}")?;
                    } else {
                        writeln!(out, "{}", v["line"].as_str().unwrap_or_default())?;
                    }
                    out.flush()?;
                }
            }
            bail!("ctgate closed the event stream (did it stop?)");
        }
    }
    Ok(())
}

fn n(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

/// The stats as a readable table; with `prev` (and the seconds between), rates.
fn render_stats(s: &Value, health: &Value, prev: Option<(&Value, f64)>) -> String {
    use std::fmt::Write as _;
    let mut o = String::new();
    let rate = |path: &dyn Fn(&Value) -> u64| -> String {
        match prev {
            Some((p, secs)) if secs > 0.0 => {
                format!("{:>10.0}/s", path(s).saturating_sub(path(p)) as f64 / secs)
            }
            _ => String::new(),
        }
    };
    let _ = writeln!(
        o,
        "ctgate  up {} s  status {}",
        n(&s["uptime_s"]),
        health["status"].as_str().unwrap_or("?")
    );
    for w in health["warnings"].as_array().into_iter().flatten() {
        let _ = writeln!(o, "  WARNING: {}", w.as_str().unwrap_or_default());
    }
    let _ = writeln!(
        o,
        "\n{:<8} {:>5} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8}",
        "PORT", "LINK", "RX", "TX", "NIC IN", "NIC OUT", "MISSED", "ERRORS"
    );
    for (i, p) in s["ports"].as_array().into_iter().flatten().enumerate() {
        let _ = writeln!(
            o,
            "{:<8} {:>5} {:>12} {:>12} {:>12} {:>12} {:>8} {:>8}{}",
            p["name"].as_str().unwrap_or("?"),
            if p["link_up"].as_bool() == Some(true) {
                "up"
            } else {
                "down"
            },
            n(&p["rx_packets"]),
            n(&p["tx_packets"]),
            n(&p["nic"]["ipackets"]),
            n(&p["nic"]["opackets"]),
            n(&p["nic"]["imissed"]),
            n(&p["nic"]["ierrors"]) + n(&p["nic"]["oerrors"]),
            rate(&|v: &Value| n(&v["ports"][i]["rx_packets"])),
        );
    }
    let _ = writeln!(
        o,
        "\n{:<8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}",
        "LCORE",
        "RX",
        "TX",
        "FORWARDED",
        "DROPPED",
        "HANDED OFF",
        "TAKEN OVER",
        "CYCLES/PKT",
        "CONNS",
        "NAT PORTS"
    );
    for l in s["lcores"].as_array().into_iter().flatten() {
        let f = &l["forwarding"];
        let pkts = n(&f["busy_packets"]);
        let cpp = if pkts > 0 {
            format!("{:.1}", n(&f["busy_cycles"]) as f64 / pkts as f64)
        } else {
            "-".into()
        };
        let _ = writeln!(
            o,
            "{:<8} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12} {:>10} {:>10}",
            l["lcore"],
            n(&f["rx"]),
            n(&f["tx"]),
            n(&f["forwarded"]),
            n(&f["dropped"]),
            n(&f["handoff_out"]),
            n(&f["handoff_in"]),
            cpp,
            n(&l["connections"]),
            n(&l["nat_ports_in_use"])
        );
    }
    let t = &s["totals"];
    let drops: Vec<String> = t["drops"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| n(v) > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        o,
        "\ntotal    rx {} tx {} forwarded {}{}  dropped {} ({})",
        n(&t["rx"]),
        n(&t["tx"]),
        n(&t["forwarded"]),
        rate(&|v: &Value| n(&v["totals"]["forwarded"])),
        n(&t["dropped"]),
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(", ")
        }
    );
    let ct = &s["conntrack"];
    let _ = writeln!(
        o,
        "\nconntrack  {} of {} connections ({:.1}%)",
        n(&ct["connections"]),
        n(&ct["capacity"]),
        ct["table_fill_ratio"].as_f64().unwrap_or(0.0) * 100.0
    );
    let counters: Vec<String> = ct["counters"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let _ = writeln!(o, "  {}", counters.join(" "));
    let _ = writeln!(
        o,
        "  new connections{}  events: {} subscribers, {} lost in workers, {} lost by slow subscribers",
        rate(&|v: &Value| n(&v["conntrack"]["counters"]["new"])),
        n(&ct["events"]["subscribers"]),
        n(&ct["events"]["dropped_worker"]),
        n(&ct["events"]["dropped_subscriber"])
    );
    let hh: Vec<String> = s["heavy_hitters"]
        .as_array()
        .into_iter()
        .flatten()
        .take(5)
        .map(|h| {
            format!(
                "{} {}",
                h["src"].as_str().unwrap_or("?"),
                h["new_connections"]
            )
        })
        .collect();
    if !hh.is_empty() {
        let _ = writeln!(o, "  top sources of new connections: {}", hh.join(", "));
    }
    let pol: Vec<String> = s["policy"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| format!("{} {}", p["rule"].as_str().unwrap_or("?"), p["packets"]))
        .collect();
    if !pol.is_empty() {
        let _ = writeln!(o, "policy     {}", pol.join(", "));
    }
    for r in s["nat"]["rules"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "nat        {} ({}): {} translated, {} out of ports",
            r["name"].as_str().unwrap_or("?"),
            r["action"].as_str().unwrap_or("?"),
            r["translations"],
            r["out_of_ports"]
        );
    }
    for p in s["nat"]["pools"].as_array().into_iter().flatten() {
        let b: Vec<String> = p["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                format!(
                    "{}{}",
                    b["backend"].as_str().unwrap_or("?"),
                    if b["healthy"].as_bool() == Some(true) {
                        ""
                    } else {
                        " (down)"
                    }
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "pool       {}: {}",
            p["name"].as_str().unwrap_or("?"),
            b.join(", ")
        );
    }
    o
}

/// `ctgate stats`
pub fn stats(args: StatsArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.api);
    let fetch = || -> anyhow::Result<(Value, Value)> {
        Ok((
            c.json("GET", "/api/v1/stats", &[])?,
            c.json("GET", "/healthz", &[])?,
        ))
    };
    let Some(every) = args.watch else {
        let (s, h) = fetch()?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&s)?);
        } else {
            print!("{}", render_stats(&s, &h, None));
        }
        return Ok(());
    };
    let every = Duration::try_from_secs_f64(every)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--watch takes a positive number of seconds")?;
    let mut prev: Option<(Value, std::time::Instant)> = None;
    loop {
        let (s, h) = fetch()?;
        let now = std::time::Instant::now();
        let text = render_stats(
            &s,
            &h,
            prev.as_ref().map(|(p, t)| (p, (now - *t).as_secs_f64())),
        );
        // Clear the screen, then the table.
        print!("\x1b[2J\x1b[H{text}");
        std::io::stdout().flush()?;
        prev = Some((s, now));
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_become_query_parameters() {
        let f = Filter {
            proto: Some("tcp".into()),
            dport: Some(80),
            reply_dst: Some("198.51.100.1".into()),
            ..Filter::default()
        };
        assert_eq!(
            f.query(),
            vec![
                ("proto", "tcp".to_string()),
                ("dport", "80".to_string()),
                ("reply-dst", "198.51.100.1".to_string())
            ]
        );
    }

    #[test]
    fn stats_table_shows_rates_and_warnings() {
        let s = serde_json::json!({
            "uptime_s": 10,
            "ports": [{"name": "cli", "link_up": true, "rx_packets": 100, "tx_packets": 90, "nic": {}}],
            "lcores": [
                {"lcore": 1, "forwarding": {"rx": 60, "tx": 50, "handoff_out": 7, "handoff_in": 3}, "connections": 2, "nat_ports_in_use": 1},
                {"lcore": 2, "forwarding": {"rx": 40, "tx": 40, "handoff_out": 3, "handoff_in": 7}, "connections": 1, "nat_ports_in_use": 0},
            ],
            "totals": {"rx": 100, "tx": 90, "forwarded": 80, "dropped": 2, "drops": {"policy": 2}},
            "conntrack": {"connections": 3, "capacity": 100, "table_fill_ratio": 0.03, "counters": {"new": 40}, "events": {}},
        });
        let mut p = s.clone();
        p["ports"][0]["rx_packets"] = 50.into();
        let h = serde_json::json!({"status": "warning", "warnings": ["conntrack table full"]});
        let text = render_stats(&s, &h, Some((&p, 1.0)));
        assert!(text.contains("WARNING: conntrack table full"), "{text}");
        assert!(text.contains("50/s"), "{text}");
        assert!(text.contains("dropped 2 (policy 2)"), "{text}");
        assert!(text.contains("3 of 100 connections (3.0%)"), "{text}");
        let lcore2 = text
            .lines()
            .find(|l| l.starts_with("2 "))
            .expect("lcore 2's row");
        let cols: Vec<&str> = lcore2.split_whitespace().collect();
        assert_eq!(
            cols,
            ["2", "40", "40", "0", "0", "3", "7", "-", "1", "0"],
            "{text}"
        );
    }
}

#[derive(Args, Debug)]
pub struct HaArgs {
    #[command(flatten)]
    api: Api,
    #[command(subcommand)]
    cmd: HaCommand,
}

#[derive(Subcommand, Debug)]
enum HaCommand {
    /// The sync's state: the peer, the external cache, the counters.
    Status {
        /// The raw JSON of /api/v1/ha.
        #[arg(long)]
        json: bool,
    },
    /// The connections the peer reported (conntrackd -e), not yet in the table.
    Cache {
        #[command(flatten)]
        filter: Box<Filter>,
        #[arg(short = 'o', long, value_enum, default_value = "extended")]
        output: Output,
    },
    /// Take over: commit the external cache into the table (conntrackd -c).
    Takeover,
    /// Ask the peer for its whole table again (conntrackd -n).
    Resync,
    /// Become the standby box: drop what arrives, answer no ARP / ND for the
    /// ports' addresses (keepalived's notify_backup).
    Standby,
}

/// `ctgate ha ...`
pub fn ha(args: HaArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.api);
    let mut out = std::io::stdout().lock();
    match args.cmd {
        HaCommand::Status { json } => {
            let v = c.json("GET", "/api/v1/ha", &[])?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
                return Ok(());
            }
            let heard = match v["last_heard_ms_ago"].as_u64() {
                Some(ms) => format!("{ms} ms ago"),
                None => "never".into(),
            };
            writeln!(
                out,
                "{} ({}); sync {} with {} from {}: peer {} (last heard {heard}), takeover {}",
                v["state"].as_str().unwrap_or("?"),
                v["role"].as_str().unwrap_or("?"),
                v["mode"].as_str().unwrap_or("?"),
                v["peer"].as_str().unwrap_or("?"),
                v["bind"].as_str().unwrap_or("?"),
                if v["peer_alive"].as_bool() == Some(true) {
                    "alive"
                } else {
                    "not heard"
                },
                v["takeover"].as_str().unwrap_or("?"),
            )?;
            writeln!(
                out,
                "external cache {} of {} connections; {} takeovers committed {}; resend queue {} ({} connections unacknowledged), waiting to go {}",
                n(&v["external_cache"]),
                n(&v["external_cache_limit"]),
                n(&v["takeovers"]),
                n(&v["committed"]),
                n(&v["resend_queue"]),
                n(&v["unacked_connections"]),
                n(&v["transmit_queue"]),
            )?;
            if let Some(m) = v["counters"].as_object() {
                for (k, val) in m {
                    writeln!(out, "  {k:<20} {}", n(val))?;
                }
            }
        }
        HaCommand::Cache { filter, output } => {
            let all = c.list_all("/api/v1/ha/cache", &filter)?;
            print_listing(&all, output, "external cache")?;
        }
        HaCommand::Takeover => {
            let v = c.json("POST", "/api/v1/ha/commit", &[])?;
            writeln!(
                out,
                "committed {} connections ({} already in the table, {} found the table full, {} not valid)",
                n(&v["committed"]),
                n(&v["exists"]),
                n(&v["table_full"]),
                n(&v["invalid"]),
            )?;
        }
        HaCommand::Resync => {
            c.json("POST", "/api/v1/ha/resync", &[])?;
            writeln!(out, "asked the peer for its table")?;
        }
        HaCommand::Standby => {
            c.json("POST", "/api/v1/ha/standby", &[])?;
            writeln!(out, "standby")?;
        }
    }
    Ok(())
}

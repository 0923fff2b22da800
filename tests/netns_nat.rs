//! NAT proven with real Linux hosts: each test builds its own network
//! namespaces around the real appliance (net_af_packet on veth pairs) and
//! runs real clients and servers through it (curl, Python http.server, the
//! programs of tests/support/nat_hosts.py), then checks what the hosts saw
//! and ctgate's final table and counters.
//!
//! ```text
//!   cli 192.0.2.2,.3/28 2001:db8:1::2 --[cli 192.0.2.1]
//!   be1 192.0.2.18/28  --[be1 192.0.2.17]        ctgate        [srv 198.51.100.1  2001:db8:2::1]-- srv 198.51.100.2 2001:db8:2::2
//!   be2 192.0.2.34/28  --[be2 192.0.2.33]                      [rtr 198.51.100.17]-- rtr 198.51.100.18 | 203.0.113.1 -- far 203.0.113.2
//!   be3 192.0.2.50/28  --[be3 192.0.2.49]
//! ```
//!
//! The outside hosts have no route to the inside prefixes: what reaches them
//! from inside must carry ctgate's outside address. TEST-NET addresses only,
//! no default route anywhere.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::netns::{Gate, Net, Stopped};
use support::*;

const P: &str = "ctnt";

fn hosts_py() -> String {
    repo()
        .join("tests/support/nat_hosts.py")
        .display()
        .to_string()
}

/// Starts `nat_hosts.py ARGS` on `host`, stopped after `secs` at the
/// latest, once it says "listening".
fn serve(net: &mut Net, host: &str, secs: u32, args: &[&str]) {
    let (secs, py) = (secs.to_string(), hosts_py());
    let mut a = vec!["timeout", secs.as_str(), "python3", py.as_str()];
    a.extend_from_slice(args);
    net.spawn(host, &a, Some("listening"));
}

/// Builds the hosts of the picture above.
fn topology() -> Net {
    let mut net = Net::new(P);
    let inside_routes: &[(&str, &str)] = &[
        ("198.51.100.0/24", "192.0.2.1"),
        ("203.0.113.0/24", "192.0.2.1"),
        ("2001:db8:2::/64", "2001:db8:1::1"),
    ];
    net.host(
        "cli",
        &["192.0.2.2/28", "192.0.2.3/28", "2001:db8:1::2/64"],
        inside_routes,
    );
    // `masquerade_200` binds these source ports: no earlier client takes
    // one as its ephemeral port (a connection of it still closing makes
    // the bind fail with "address in use").
    net.check(
        "cli",
        &[
            "sysctl",
            "-qw",
            "net.ipv4.ip_local_reserved_ports=41000-41099",
        ],
        10,
    );
    for (i, h) in ["be1", "be2", "be3"].iter().enumerate() {
        let gw = format!("192.0.2.{}", 17 + 16 * i);
        let me = format!("192.0.2.{}/28", 18 + 16 * i);
        net.host(
            h,
            &[&me],
            &[("198.51.100.0/24", &gw), ("203.0.113.0/24", &gw)],
        );
    }
    net.host("srv", &["198.51.100.2/28", "2001:db8:2::2/64"], &[]);
    net.host("rtr", &["198.51.100.18/28"], &[]);
    net.host_behind(
        "far",
        "rtr",
        &["203.0.113.1/24"],
        &["203.0.113.2/24"],
        &[("198.51.100.0/24", "203.0.113.1")],
    );
    net
}

/// ctgate's config for the topology: ports, the route to the far host,
/// a stateful policy, then `extra` ([conntrack.timeouts], [[nat]], [[pool]]).
fn config(net: &Net, timeouts: &str, extra: &str) -> String {
    config_workers(net, 1, 1, timeouts, extra)
}

/// [`config`] with `workers` workers (lcores 1..=workers, all on CPU 1: the
/// machine may have two) and `queues` queue pairs on every port.
fn config_workers(net: &Net, workers: usize, queues: usize, timeouts: &str, extra: &str) -> String {
    let lcores: Vec<String> = (1..=workers).map(|l| l.to_string()).collect();
    let mut c = format!(
        "workers = [{}]\nworker_cpus = [{}]\nmempool_mbufs = 8191\n{}\n",
        lcores.join(", "),
        vec!["1"; workers].join(", "),
        eal_args_toml()
    );
    let qpairs = if queues > 1 {
        format!(",qpairs={queues}")
    } else {
        String::new()
    };
    let ports = [
        (
            "cli",
            "ipv4 = \"192.0.2.1/28\"\nipv6 = \"2001:db8:1::1/64\"",
        ),
        ("be1", "ipv4 = \"192.0.2.17/28\""),
        ("be2", "ipv4 = \"192.0.2.33/28\""),
        ("be3", "ipv4 = \"192.0.2.49/28\""),
        (
            "srv",
            "ipv4 = \"198.51.100.1/28\"\nipv6 = \"2001:db8:2::1/64\"",
        ),
        ("rtr", "ipv4 = \"198.51.100.17/28\""),
    ];
    for (i, (name, addrs)) in ports.iter().enumerate() {
        c += &format!(
            "\n[[port]]\nname = \"{name}\"\ndevargs = \"net_af_packet{i},iface={}{qpairs}\"\n{addrs}\n",
            net.gw_if(name)
        );
    }
    c += r#"
[[route]]
prefix = "203.0.113.0/24"
via = "198.51.100.18"
port = "rtr"

[conntrack]
policy_default = "drop"
"#;
    if !timeouts.is_empty() {
        c += "\n[conntrack.timeouts]\n";
        c += timeouts;
        c += "\n";
    }
    c += r#"
[[policy]]
name = "established"
states = "established,related"
action = "accept"

[[policy]]
name = "invalid"
states = "invalid"
action = "drop"

[[policy]]
name = "new"
states = "new"
action = "accept"
"#;
    c += extra;
    c
}

const MASQUERADE: &str = r#"
[[nat]]
name = "masq-srv"
out_port = "srv"
src = "192.0.2.0/24"
action = "masquerade"

[[nat]]
name = "masq-rtr"
out_port = "rtr"
src = "192.0.2.0/24"
action = "masquerade to :20000-20999"

[[nat]]
name = "masq-v6"
out_port = "srv"
src = "2001:db8:1::/64"
action = "masquerade"
"#;

/// Port forwarding from the outside port to the inside host: HTTP (80 ->
/// 8080) and DNS (53 -> 5353); see [`check_forwards`].
const FORWARDS: &str = r#"
[[nat]]
name = "fwd-http"
in_port = "srv"
proto = "tcp"
dport = "80"
action = "dnat to 192.0.2.2:8080"

[[nat]]
name = "fwd-dns"
in_port = "srv"
proto = "udp"
dport = "53"
action = "dnat to 192.0.2.2:5353"
"#;

/// TCP to ctgate's outside address, port `dport`, balanced over the three
/// backends' port 8080 (rule "lb", pool "web"); see [`load_balanced`].
fn load_balancer(dport: u16) -> String {
    format!(
        r#"
[[pool]]
name = "web"
backends = ["192.0.2.18:8080", "192.0.2.34:8080", "192.0.2.50:8080"]

[[nat]]
name = "lb"
in_port = "srv"
proto = "tcp"
dport = "{dport}"
action = "dnat to pool web"
"#
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The table lines of the final stats.
fn table(s: &Stopped) -> Vec<String> {
    s.stats["conntrack"]["table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

/// key=value fields of a conntrack line, in order (each key twice: original
/// then reply tuple).
fn fields(line: &str) -> Vec<(String, String)> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The original and reply tuples of a conntrack line as
/// ((src, dst, sport, dport), (src, dst, sport, dport)).
type T4 = (String, String, String, String);
fn tuples(line: &str) -> (T4, T4) {
    let f = fields(line);
    let get = |k: &str, n: usize| {
        f.iter()
            .filter(|(a, _)| a == k)
            .nth(n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let t = |n| {
        (
            get("src", n),
            get("dst", n),
            get("sport", n),
            get("dport", n),
        )
    };
    (t(0), t(1))
}

fn nat_rule(s: &Stopped, name: &str) -> (u64, u64) {
    for r in s.stats["conntrack"]["nat"].as_array().unwrap() {
        if r[0] == name {
            return (r[1].as_u64().unwrap(), r[2].as_u64().unwrap());
        }
    }
    panic!("no NAT rule {name} in {:#}", s.stats["conntrack"]);
}

/// Starts a Python http.server in `host` serving `dir` whose log goes to `log`.
fn http_server(net: &mut Net, host: &str, bind: &str, port: u16, dir: &str, log: &str) {
    let script = format!(
        "exec timeout 120 python3 -u -m http.server {port} --bind {bind} --directory {dir} 2>{log}"
    );
    net.spawn(host, &["sh", "-c", &script], Some("Serving HTTP"));
}

/// curl, retried while the server starts (bounded); returns the body.
fn curl(net: &Net, host: &str, url: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        let out = run_for(
            &mut net.cmd(host, &["curl", "-sS", "-g", "--max-time", "10", url]),
            20,
        );
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{host}: curl {url} never succeeded: {last}");
}

/// The client addresses an http.server logged ("ADDR - - [date] ...").
fn http_clients(log: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"GET "))
        .map(|l| {
            let a = l.split_whitespace().next().unwrap_or("");
            a.strip_prefix("::ffff:").unwrap_or(a).to_owned()
        })
        .collect()
}

/// The [`FORWARDS`] from srv, which knows only ctgate's address: three
/// HTTP requests for `path` answered with `body` by the inside server (whose
/// log, `log`, shows the outside client), and three UDP flows of two
/// datagrams echoed by the inside host, which sees the client's address and
/// port.
fn check_forwards(net: &Net, path: &str, body: &str, log: &str) {
    for _ in 0..3 {
        assert_eq!(
            curl(net, "srv", &format!("http://198.51.100.1{path}")),
            body
        );
    }
    assert_eq!(
        http_clients(log),
        vec!["198.51.100.2"; 3],
        "the inside server sees the outside client"
    );
    let out = net.check(
        "srv",
        &[
            "python3",
            &hosts_py(),
            "udp-flows",
            "198.51.100.1",
            "53",
            "3",
            "2",
            "2",
        ],
        60,
    );
    for f in json(&out).as_array().unwrap() {
        let port = f["local"].as_str().unwrap().split(' ').nth(1).unwrap();
        for a in f["answers"].as_array().unwrap() {
            assert_eq!(a["echo_ok"], true, "{out}");
            assert_eq!(a["seen"], format!("198.51.100.2 {port}"), "{out}");
        }
    }
}

/// `n` connections one after the other from srv to ctgate's port `dport`
/// (load-balanced to the backends' tcp-serve), and one long-lived connection
/// asked every `sticky_every` which backend it talks to: every backend sees
/// the client's address and the long-lived connection stays on its backend.
/// Returns the connections per backend, and the long-lived one's backend.
fn load_balanced(
    net: &Net,
    dport: u16,
    n: u32,
    sticky_every: u32,
) -> (BTreeMap<String, usize>, String) {
    let out = net.check(
        "srv",
        &[
            "python3",
            &hosts_py(),
            "tcp-seq",
            "198.51.100.1",
            &dport.to_string(),
            &n.to_string(),
            &sticky_every.to_string(),
        ],
        170,
    );
    let r = json(&out);
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for s in r["seen"].as_array().unwrap() {
        let w: Vec<&str> = s.as_str().unwrap().split_whitespace().collect();
        assert_eq!(w[1], "198.51.100.2", "backends see the client: {s}");
        *count.entry(w[0].to_owned()).or_default() += 1;
    }
    let sticky: Vec<&str> = r["sticky"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().split(' ').next().unwrap())
        .collect();
    assert_eq!(sticky.len() as u32, 1 + n / sticky_every);
    assert!(
        sticky.iter().all(|b| *b == sticky[0]),
        "the long-lived connection moved: {sticky:?}"
    );
    (count, sticky[0].to_owned())
}

/// 200 connections at once from cli's two addresses using the same 100
/// source ports to srv's tcp-serve on port 9000: each is masqueraded to a
/// distinct port of 198.51.100.1 (checked); returns "client-address port"
/// -> the port the server saw.
fn masquerade_200(net: &Net) -> BTreeMap<String, u16> {
    let out = net.check(
        "cli",
        &[
            "python3",
            &hosts_py(),
            "tcp-many",
            "198.51.100.2",
            "9000",
            "200",
            "192.0.2.2,192.0.2.3",
            "41000",
        ],
        90,
    );
    let conns = json(&out);
    let conns = conns.as_array().unwrap();
    assert_eq!(conns.len(), 200);
    let mut seen_ports = BTreeSet::new();
    let mut by_client = BTreeMap::new();
    for c in conns {
        let seen = c["seen"].as_str().unwrap();
        let w: Vec<&str> = seen.split_whitespace().collect();
        assert_eq!(w[..2], ["srv", "198.51.100.1"], "server saw {seen}");
        let port: u16 = w[2].parse().unwrap();
        assert!(
            seen_ports.insert(port),
            "NAT port {port} used twice: {conns:?}"
        );
        by_client.insert(c["local"].as_str().unwrap().to_owned(), port);
    }
    assert_eq!(by_client.len(), 200, "distinct client endpoints");
    by_client
}

/// The table's connections to port 9000 carry the bindings the server saw.
fn assert_bindings(lines: &[String], by_client: &BTreeMap<String, u16>) {
    let mut in_table = BTreeMap::new();
    for l in lines.iter().filter(|l| l.contains(" dport=9000 ")) {
        let (o, r) = tuples(l);
        assert_eq!(o.1, "198.51.100.2", "{l}");
        assert_eq!(
            (r.0.as_str(), r.1.as_str()),
            ("198.51.100.2", "198.51.100.1"),
            "{l}"
        );
        in_table.insert(format!("{} {}", o.0, o.2), r.3.parse::<u16>().unwrap());
    }
    assert_eq!(
        &in_table, by_client,
        "ctgate's bindings = what the server saw"
    );
}

#[test]
fn masquerade_curl_and_200_parallel_connections() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("nat-masq");
    let mut net = topology();
    let gate = Gate::start(&dir.0, &config(&net, "", MASQUERADE));

    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello through masquerade\n").unwrap();
    let log = dir.path("http.log").display().to_string();
    http_server(
        &mut net,
        "srv",
        "::",
        8080,
        &www.display().to_string(),
        &log,
    );
    serve(
        &mut net,
        "srv",
        120,
        &["tcp-serve", "::", "9000", "srv", "110"],
    );

    // curl from inside, IPv4 and IPv6: the server logs ctgate's addresses.
    let body = curl(&net, "cli", "http://198.51.100.2:8080/hello.txt");
    assert_eq!(body, "hello through masquerade\n");
    let body = curl(&net, "cli", "http://[2001:db8:2::2]:8080/hello.txt");
    assert_eq!(body, "hello through masquerade\n");
    let clients = http_clients(&log);
    assert!(
        clients.contains(&"198.51.100.1".to_owned())
            && clients.contains(&"2001:db8:2::1".to_owned()),
        "the server saw {clients:?}"
    );
    assert!(
        clients
            .iter()
            .all(|c| c == "198.51.100.1" || c == "2001:db8:2::1"),
        "the server saw an inside address: {clients:?}"
    );

    // 200 connections at once from two inside addresses that use the same 100
    // source ports: masquerade keeps a port while it is free and must pick
    // another for the second user of each, so the 200 are distinct at the server.
    let by_client = masquerade_200(&net);
    let kept = by_client
        .iter()
        .filter(|(local, port)| local.ends_with(&format!(" {port}")))
        .count();
    // At most one of each pair can keep its port; nearly all first users do
    // (a random pick for a second user may land on a port used later).
    assert!(
        (90..=100).contains(&kept),
        "{kept} connections kept their port"
    );

    let s = gate.stop();
    // The table holds every connection with the binding the server saw.
    let lines = table(&s);
    assert_bindings(&lines, &by_client);
    let (hits, oop) = nat_rule(&s, "masq-srv");
    assert!(hits >= 201, "masq-srv translated {hits}");
    assert_eq!(oop, 0);
    assert!(nat_rule(&s, "masq-v6").0 >= 1);
    // The ports source NAT holds are those of the masqueraded TCP/UDP
    // connections still in the table (protocol, outside address, port).
    let masq_ports: BTreeSet<(String, String, String)> = lines
        .iter()
        .filter(|l| l.contains(" tcp ") || l.contains(" udp "))
        .filter_map(|l| {
            let (_, r) = tuples(l);
            let proto = l.split_whitespace().nth(2).unwrap_or_default().to_owned();
            (r.1 == "198.51.100.1" || r.1 == "2001:db8:2::1").then_some((proto, r.1, r.3))
        })
        .collect();
    assert!(
        masq_ports.len() >= 200,
        "{} masqueraded ports",
        masq_ports.len()
    );
    assert_eq!(
        s.stats["conntrack"]["nat_ports_in_use"].as_u64(),
        Some(masq_ports.len() as u64),
        "NAT ports in use"
    );
    s.assert_balanced();
}

#[test]
fn dnat_port_forwarding_to_an_inside_server() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("nat-dnat");
    let mut net = topology();
    let rules = format!(
        "{MASQUERADE}{FORWARDS}{}",
        r#"
[[nat]]
name = "fwd-closed"
in_port = "srv"
proto = "udp"
dport = "54"
action = "dnat to 192.0.2.2:5999"
"#
    );
    let gate = Gate::start(&dir.0, &config(&net, "", &rules));
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.txt"), "inside server\n").unwrap();
    let log = dir.path("http.log").display().to_string();
    http_server(
        &mut net,
        "cli",
        "192.0.2.2",
        8080,
        &www.display().to_string(),
        &log,
    );
    let py = hosts_py();
    serve(
        &mut net,
        "cli",
        120,
        &["udp-serve", "192.0.2.2", "5353", "110"],
    );

    // The outside host only knows ctgate's address.
    check_forwards(&net, "/index.txt", "inside server\n", &log);
    // A forwarded port nobody listens on: the inside host's port unreachable
    // comes back translated (from the forwarded address and port), so the
    // outside client's kernel matches it to its socket.
    let out = net.check(
        "srv",
        &["python3", &py, "udp-refused", "198.51.100.1", "54"],
        20,
    );
    assert_eq!(out.trim(), "refused");
    // Not forwarded: another port of ctgate's address.
    let out = run_for(
        &mut net.cmd(
            "srv",
            &["curl", "-sS", "--max-time", "2", "http://198.51.100.1:81/"],
        ),
        10,
    );
    assert!(!out.status.success());

    let s = gate.stop();
    let lines = table(&s);
    let fwd: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(" dst=198.51.100.1 ") && l.contains(" dport=80 "))
        .collect();
    assert_eq!(fwd.len(), 3, "{lines:#?}");
    for l in fwd {
        let (o, r) = tuples(l);
        assert_eq!(
            (o.0.as_str(), o.1.as_str()),
            ("198.51.100.2", "198.51.100.1")
        );
        assert_eq!(
            (r.0.as_str(), r.1.as_str(), r.2.as_str(), r.3.as_str()),
            ("192.0.2.2", "198.51.100.2", "8080", o.2.as_str()),
            "{l}"
        );
        assert!(l.contains("[ASSURED]"), "{l}");
    }
    assert_eq!(nat_rule(&s, "fwd-http").0, 3);
    assert_eq!(nat_rule(&s, "fwd-dns").0, 3);
    assert_eq!(nat_rule(&s, "fwd-closed").0, 1);
    assert_eq!(
        nat_rule(&s, "masq-srv").0,
        0,
        "replies are not new connections"
    );
    s.assert_balanced();
}

#[test]
fn load_balancing_over_three_backends() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("nat-lb");
    let mut net = topology();
    let rules = load_balancer(80);
    let gate = Gate::start(&dir.0, &config(&net, "", &rules));
    for b in ["be1", "be2", "be3"] {
        serve(
            &mut net,
            b,
            200,
            &["tcp-serve", "0.0.0.0", "8080", b, "190"],
        );
    }
    // 3000 connections one after the other, and one long-lived connection
    // asked every 300 which backend it talks to.
    let (count, sticky) = load_balanced(&net, 80, 3000, 300);
    assert_eq!(count.len(), 3, "{count:?}");
    for (b, n) in &count {
        assert!((800..=1200).contains(n), "{b} got {n} of 3000: {count:?}");
    }

    let s = gate.stop();
    // The table agrees with the backends: each connection to the VIP is bound
    // to one backend, in the proportions the backends counted.
    let mut in_table: BTreeMap<String, usize> = BTreeMap::new();
    for l in table(&s).iter().filter(|l| l.contains(" dport=80 ")) {
        let (o, r) = tuples(l);
        assert_eq!(o.1, "198.51.100.1", "{l}");
        assert_eq!(r.2, "8080", "{l}");
        let b = match r.0.as_str() {
            "192.0.2.18" => "be1",
            "192.0.2.34" => "be2",
            "192.0.2.50" => "be3",
            other => panic!("bound to {other}: {l}"),
        };
        *in_table.entry(b.to_owned()).or_default() += 1;
    }
    let want: BTreeMap<String, usize> = count
        .iter()
        .map(|(b, n)| (b.clone(), n + usize::from(*b == sticky)))
        .collect();
    assert_eq!(in_table, want, "table vs backends");
    assert_eq!(nat_rule(&s, "lb").0, 3001);
    s.assert_balanced();
}

#[test]
fn traceroute_through_snat() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("nat-trace");
    let net = topology();
    let gate = Gate::start(&dir.0, &config(&net, "", MASQUERADE));
    // The far host answers a ping through the NAT first (the path works).
    net.check(
        "cli",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "203.0.113.2"],
        30,
    );
    let out = net.check(
        "cli",
        &["python3", &hosts_py(), "trace", "203.0.113.2", "3"],
        60,
    );
    let r = json(&out);
    let icmp = r["icmp"].as_array().unwrap();
    let probes = r["probes"].as_array().unwrap();
    // Hop by hop: ctgate itself (TTL 1), the router beyond it (TTL 2), the far
    // host (TTL 3: port unreachable / echo reply).
    let hop = |ttl: u64| match ttl {
        1 => ("192.0.2.1", 11u64, 0u64),
        2 => ("198.51.100.18", 11, 0),
        _ => ("203.0.113.2", 3, 3),
    };
    for p in probes {
        let ttl = p["ttl"].as_u64().unwrap();
        let (from, ty, code) = hop(ttl);
        let found: Vec<&serde_json::Value> = if p["kind"] == "udp" {
            icmp.iter()
                .filter(|m| {
                    m["inner_proto"] == 17 && m["inner_sport"] == p["sport"] && m["src"] == from
                })
                .collect()
        } else if ttl < 3 {
            icmp.iter()
                .filter(|m| m["inner_proto"] == 1 && m["inner_seq"] == p["seq"])
                .collect()
        } else {
            icmp.iter()
                .filter(|m| m["type"] == 0 && m["seq"] == p["seq"])
                .collect()
        };
        assert_eq!(found.len(), 1, "probe {p}: got {r:#}");
        let m = found[0];
        assert_eq!(m["dst"], "192.0.2.2", "{m}");
        assert_eq!(m["ip_csum_ok"], true, "{m}");
        assert_eq!(m["icmp_csum_ok"], true, "{m}");
        if p["kind"] == "icmp" && ttl == 3 {
            assert_eq!(m["src"], "203.0.113.2");
            assert_eq!(m["id"], p["id"], "echo id translated back: {m}");
            continue;
        }
        assert_eq!(m["src"], from, "probe {p}: {m}");
        let want_type = if p["kind"] == "icmp" { 11 } else { ty };
        assert_eq!(m["type"], want_type, "{m}");
        if p["kind"] == "udp" {
            assert_eq!(m["code"], code, "{m}");
            assert_eq!(m["inner_dport"], p["dport"], "{m}");
        } else {
            assert_eq!(
                m["inner_id"], p["id"],
                "quoted echo id translated back: {m}"
            );
        }
        // The quoted datagram is the client's own, as it sent it.
        assert_eq!(m["inner_src"], "192.0.2.2", "{m}");
        assert_eq!(m["inner_dst"], "203.0.113.2", "{m}");
        assert_eq!(m["inner_ip_csum_ok"], true, "{m}");
    }
    // The kernel of the client matched each UDP error to its socket.
    let recverr = r["recverr"].as_array().unwrap();
    for p in probes.iter().filter(|p| p["kind"] == "udp") {
        let (from, ty, code) = hop(p["ttl"].as_u64().unwrap());
        assert!(
            recverr.iter().any(|e| e["sport"] == p["sport"]
                && e["offender"] == from
                && e["type"] == ty
                && e["code"] == code),
            "probe {p}: {r:#}"
        );
    }

    let s = gate.stop();
    // The probes beyond ctgate went out translated into masq-rtr's port range.
    let lines = table(&s);
    let udp: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("ipv4") && l.contains(" udp ") && l.contains("dst=203.0.113.2"))
        .collect();
    assert_eq!(udp.len(), 2, "TTL 2 and 3 probes: {lines:#?}");
    for l in udp {
        let (o, r) = tuples(l);
        assert_eq!(o.0, "192.0.2.2");
        assert_eq!(r.1, "198.51.100.17", "{l}");
        let p: u16 = r.3.parse().unwrap();
        assert!((20000..=20999).contains(&p), "{l}");
    }
    s.assert_balanced();
    // UDP TTL 1 twice, echo TTL 1 in both rounds.
    assert_eq!(
        s.stats["totals"]["drops"]["ttl_exceeded"], 4,
        "{:#}",
        s.stats
    );
}

/// Runs udp-flows in cli; the answers per flow.
fn udp_flows(net: &Net, dst: &str, flows: u32, per_flow: u32, wait: &str) -> serde_json::Value {
    let out = net.check(
        "cli",
        &[
            "python3",
            &hosts_py(),
            "udp-flows",
            dst,
            "7000",
            &flows.to_string(),
            &per_flow.to_string(),
            wait,
        ],
        60,
    );
    json(&out)
}

#[test]
fn udp_through_snat_and_port_exhaustion() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("nat-udp");
    let mut net = topology();
    let rules = r#"
[[nat]]
name = "tiny"
out_port = "srv"
proto = "udp"
src = "192.0.2.0/24"
action = "masquerade to :20000-20003"
"#;
    let gate = Gate::start(
        &dir.0,
        &config(&net, "udp_timeout = 5\nudp_timeout_stream = 5", rules),
    );
    serve(
        &mut net,
        "srv",
        120,
        &["udp-serve", "198.51.100.2", "7000", "110"],
    );
    // Four flows fill the pool; each gets its own port and its own answers.
    let r = udp_flows(&net, "198.51.100.2", 4, 3, "2");
    let mut ports = BTreeSet::new();
    for f in r.as_array().unwrap() {
        let answers = f["answers"].as_array().unwrap();
        let first = answers[0]["seen"].as_str().unwrap_or_else(|| panic!("{r}"));
        for a in answers {
            assert_eq!(a["echo_ok"], true, "{r}");
            assert_eq!(a["seen"], first, "a flow keeps its binding: {r}");
        }
        let (addr, port) = first.split_once(' ').unwrap();
        assert_eq!(addr, "198.51.100.1");
        let port: u16 = port.parse().unwrap();
        assert!((20000..=20003).contains(&port), "{r}");
        ports.insert(port);
    }
    assert_eq!(ports.len(), 4, "{r}");
    // While those live, new flows find no port: dropped, counted.
    let r = udp_flows(&net, "198.51.100.2", 2, 1, "1");
    for f in r.as_array().unwrap() {
        assert!(f["answers"][0].is_null(), "pool exhausted, yet: {r}");
    }
    // Once the four expire (5 s without packets), the pool serves again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = udp_flows(&net, "198.51.100.2", 1, 1, "1");
        if !r[0]["answers"][0].is_null() {
            let seen = r[0]["answers"][0]["seen"].as_str().unwrap();
            let port: u16 = seen.split(' ').nth(1).unwrap().parse().unwrap();
            assert!((20000..=20003).contains(&port), "{r}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the pool never freed its ports: {r}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // And four at once again.
    std::thread::sleep(Duration::from_secs(6));
    let r = udp_flows(&net, "198.51.100.2", 4, 1, "2");
    assert!(
        r.as_array()
            .unwrap()
            .iter()
            .all(|f| f["answers"][0]["echo_ok"] == true),
        "{r}"
    );

    let s = gate.stop();
    let (hits, oop) = nat_rule(&s, "tiny");
    assert!(oop >= 2, "out-of-ports counter: {:#}", s.stats["conntrack"]);
    assert!(hits >= 9, "{hits}");
    assert_eq!(s.stats["conntrack"]["nat_out_of_ports"], oop);
    assert!(
        s.stats["totals"]["drops"]["conntrack"].as_u64().unwrap() >= oop,
        "{:#}",
        s.stats
    );
    s.assert_balanced();
}

#[test]
fn tcp_port_exhaustion_and_recovery() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("nat-tcp-ports");
    let mut net = topology();
    let rules = r#"
[[nat]]
name = "two-ports"
out_port = "srv"
proto = "tcp"
src = "192.0.2.0/24"
action = "masquerade to :20000-20001"
"#;
    // Closed connections hold their ports for TIME_WAIT: 1 s here.
    let gate = Gate::start(
        &dir.0,
        &config(
            &net,
            "tcp_timeout_time_wait = 1\ntcp_timeout_close = 1",
            rules,
        ),
    );
    let py = hosts_py();
    serve(
        &mut net,
        "srv",
        120,
        &["tcp-serve", "198.51.100.2", "9000", "srv", "110"],
    );
    let out = net.check(
        "cli",
        &["python3", &py, "tcp-exhaust", "198.51.100.2", "9000", "2"],
        60,
    );
    let r = json(&out);
    let port = |v: &serde_json::Value| -> u16 {
        let w: Vec<&str> = v.as_str().unwrap().split_whitespace().collect();
        assert_eq!(w[1], "198.51.100.1", "{r}");
        w[2].parse().unwrap()
    };
    let held: BTreeSet<u16> = r["held"].as_array().unwrap().iter().map(port).collect();
    assert_eq!(held, BTreeSet::from([20000, 20001]), "{r}");
    assert!(
        r["while_full"].is_null(),
        "a third connection got through: {r}"
    );
    assert!(
        !r["after"].is_null(),
        "no connection after the pool freed: {r}"
    );
    assert!((20000..=20001).contains(&port(&r["after"])), "{r}");

    let s = gate.stop();
    let (hits, oop) = nat_rule(&s, "two-ports");
    assert!(oop >= 1, "{:#}", s.stats["conntrack"]);
    assert_eq!(hits, 3, "{:#}", s.stats["conntrack"]);
    s.assert_balanced();
}

#[test]
fn nat66_masquerade_and_snat_to_an_address() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("nat66");
    let mut net = topology();
    let rules = r#"
[[nat]]
name = "snat6-udp"
out_port = "srv"
src = "2001:db8:1::/64"
proto = "udp"
action = "snat to 2001:db8:2::100"

[[nat]]
name = "masq6"
out_port = "srv"
src = "2001:db8:1::/64"
action = "masquerade"
"#;
    let gate = Gate::start(&dir.0, &config(&net, "", rules));
    // ctgate answers neighbour solicitations for its port address only: the
    // outside host is told where the SNAT address lives.
    let mac =
        std::fs::read_to_string(format!("/sys/class/net/{}/address", net.gw_if("srv"))).unwrap();
    net.check(
        "srv",
        &[
            "ip",
            "-6",
            "neigh",
            "add",
            "2001:db8:2::100",
            "lladdr",
            mac.trim(),
            "dev",
            "eth0",
            "nud",
            "permanent",
        ],
        10,
    );
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("six.txt"), "nat66\n").unwrap();
    let log = dir.path("http.log").display().to_string();
    http_server(
        &mut net,
        "srv",
        "::",
        8080,
        &www.display().to_string(),
        &log,
    );
    let py = hosts_py();
    serve(
        &mut net,
        "srv",
        120,
        &["tcp-serve", "::", "9000", "srv", "110"],
    );
    serve(&mut net, "srv", 120, &["udp-serve", "::", "7000", "110"]);
    assert_eq!(
        curl(&net, "cli", "http://[2001:db8:2::2]:8080/six.txt"),
        "nat66\n"
    );
    assert_eq!(http_clients(&log), vec!["2001:db8:2::1"]);
    net.check(
        "cli",
        &[
            "ping",
            "-6",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "2001:db8:2::2",
        ],
        30,
    );
    let out = net.check(
        "cli",
        &[
            "python3",
            &py,
            "tcp-many",
            "2001:db8:2::2",
            "9000",
            "50",
            "-",
            "0",
        ],
        60,
    );
    for c in json(&out).as_array().unwrap() {
        let seen = c["seen"].as_str().unwrap();
        assert!(seen.starts_with("srv 2001:db8:2::1 "), "{seen}");
    }
    let r = udp_flows(&net, "2001:db8:2::2", 3, 2, "2");
    for f in r.as_array().unwrap() {
        for a in f["answers"].as_array().unwrap() {
            assert_eq!(a["echo_ok"], true, "{r}");
            assert!(
                a["seen"].as_str().unwrap().starts_with("2001:db8:2::100 "),
                "{r}"
            );
        }
    }

    // ICMPv6 errors come back translated: port unreachable from the server
    // (quoting the datagram from 2001:db8:2::100) reaches the client's socket;
    // hop limit 1 expires at ctgate, which answers the client itself.
    let out = net.check(
        "cli",
        &["python3", &py, "udp-refused", "2001:db8:2::2", "7999"],
        20,
    );
    assert_eq!(out.trim(), "refused");
    let out = run_for(
        &mut net.cmd(
            "cli",
            &[
                "ping",
                "-6",
                "-c",
                "1",
                "-t",
                "1",
                "-W",
                "2",
                "2001:db8:2::2",
            ],
        ),
        20,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From 2001:db8:1::1") && text.contains("Time exceeded"),
        "{text}"
    );

    let s = gate.stop();
    let lines = table(&s);
    let icmp6 = lines
        .iter()
        .find(|l| l.contains("icmpv6") && l.contains("dst=2001:db8:2::2"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(
        icmp6.contains("src=2001:db8:2::2 dst=2001:db8:2::1 "),
        "{icmp6}"
    );
    assert_eq!(nat_rule(&s, "snat6-udp").0, 4);
    assert!(nat_rule(&s, "masq6").0 >= 52);
    s.assert_balanced();
}

/// RFC 4787 endpoint-independent mapping and filtering: an inside UDP
/// endpoint keeps its outside port, and an outside endpoint it never sent to
/// (another port of the server) reaches it through that port.
#[test]
fn endpoint_independent_mapping_and_filtering_for_udp() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("nat-eim");
    let mut net = topology();
    let rules = r#"
[[nat]]
name = "eim"
out_port = "srv"
proto = "udp"
src = "192.0.2.0/24"
action = "masquerade"
endpoint_independent = true
"#;
    let gate = Gate::start(&dir.0, &config(&net, "", rules));
    // The server: learns the client's outside endpoint from one datagram,
    // then answers from a port the client never sent to.
    let server = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("198.51.100.2", 7000))
print("listening", flush=True)
s.settimeout(30)
data, peer = s.recvfrom(2048)
print("peer", peer[0], peer[1], flush=True)
o = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
o.bind(("198.51.100.2", 7001))
o.sendto(b"from-7001", peer)
"#;
    net.spawn(
        "srv",
        &["timeout", "60", "python3", "-c", server],
        Some("listening"),
    );
    let client = r#"
import socket, json
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.2", 5000))
s.sendto(b"hello", ("198.51.100.2", 7000))
s.settimeout(10)
got = []
try:
    data, peer = s.recvfrom(2048)
    got.append({"from": "%s:%d" % peer, "data": data.decode()})
except socket.timeout:
    pass
print(json.dumps(got))
"#;
    let out = net.check("cli", &["python3", "-c", client], 30);
    let got = json(&out);
    assert_eq!(
        got,
        serde_json::json!([{"from": "198.51.100.2:7001", "data": "from-7001"}]),
        "{out}"
    );
    let stopped = gate.stop();
    let ct = &stopped.stats["conntrack"];
    // One mapping (192.0.2.2:5000), held by both flows; none refused.
    assert_eq!(ct["nat_eim_mappings"], 1, "{ct}");
    assert_eq!(ct["nat_eim_full"], 0, "{ct}");
    let table: Vec<String> = ct["table"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    // The outbound flow kept port 5000; the inbound one is translated to it.
    assert!(
        table.iter().any(
            |l| l.contains("src=192.0.2.2 dst=198.51.100.2 sport=5000 dport=7000")
                && l.contains("src=198.51.100.2 dst=198.51.100.1 sport=7000 dport=5000")
        ),
        "{table:?}"
    );
    assert!(
        table.iter().any(
            |l| l.contains("src=198.51.100.2 dst=198.51.100.1 sport=7001 dport=5000")
                && l.contains("src=192.0.2.2 dst=198.51.100.2 sport=5000 dport=7001")
        ),
        "{table:?}"
    );
}

/// `ctgate ct list` (the CLI, through the REST API at `api`).
fn ct_list(api: &str) -> Vec<String> {
    let out = std::process::Command::new(ctgate())
        .args(["ct", "list"])
        .env("CTGATE_API", format!("http://{api}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "ctgate ct list: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A connection's identity in a listing line: family, protocol and the
/// original direction's fields (without its counters).
fn original_key(line: &str) -> String {
    let w: Vec<&str> = line.split_whitespace().collect();
    let mut key = vec![w[0], w[2]];
    let mut srcs = 0;
    for t in &w[4..] {
        if t.starts_with("src=") {
            srcs += 1;
            if srcs == 2 {
                break;
            }
        }
        if t.contains('=') && !t.starts_with("packets=") && !t.starts_with("bytes=") {
            key.push(t);
        }
    }
    key.join(" ")
}

/// One gate with `workers` workers (software dispatch over net_af_packet
/// queue pairs) carries the demo's traffic, 200 parallel masqueraded TCP
/// connections, DNAT port forwarding (TCP and UDP), load balancing over three
/// backends, masqueraded UDP and ICMP; every connection is listed once by
/// `ctgate ct list` with the binding its hosts saw, its replies came back,
/// every worker carried traffic and handed some to another, and the
/// accounting balances.
fn several_workers(workers: usize, queues: usize) {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new(&format!("nat-workers{workers}"));
    let mut net = topology();
    const API: &str = "127.0.0.1:18191";
    let rules = format!(
        "{MASQUERADE}{FORWARDS}{}{}",
        load_balancer(81),
        r#"
[rest]
bind = "127.0.0.1:18191"
"#
    );
    let gate = Gate::start(&dir.0, &config_workers(&net, workers, queues, "", &rules));
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello through several workers\n").unwrap();
    let www = www.display().to_string();
    let srv_log = dir.path("srv-http.log").display().to_string();
    let cli_log = dir.path("cli-http.log").display().to_string();
    http_server(&mut net, "srv", "::", 8080, &www, &srv_log);
    http_server(&mut net, "cli", "192.0.2.2", 8080, &www, &cli_log);
    serve(
        &mut net,
        "srv",
        200,
        &["tcp-serve", "::", "9000", "srv", "190"],
    );
    serve(
        &mut net,
        "srv",
        200,
        &["udp-serve", "198.51.100.2", "7000", "190"],
    );
    serve(
        &mut net,
        "cli",
        200,
        &["udp-serve", "192.0.2.2", "5353", "190"],
    );
    for b in ["be1", "be2", "be3"] {
        serve(
            &mut net,
            b,
            200,
            &["tcp-serve", "0.0.0.0", "8080", b, "190"],
        );
    }

    // The demo's traffic: ICMP and HTTP, IPv4 and IPv6, masqueraded.
    for dst in ["198.51.100.2", "2001:db8:2::2", "203.0.113.2"] {
        net.check("cli", &["ping", "-c", "3", "-i", "0.2", "-W", "2", dst], 30);
    }
    for url in [
        "http://198.51.100.2:8080/hello.txt",
        "http://[2001:db8:2::2]:8080/hello.txt",
    ] {
        assert_eq!(curl(&net, "cli", url), "hello through several workers\n");
    }
    let clients = http_clients(&srv_log);
    assert!(
        !clients.is_empty()
            && clients
                .iter()
                .all(|c| c == "198.51.100.1" || c == "2001:db8:2::1"),
        "the outside server saw {clients:?}"
    );

    // 200 parallel masqueraded connections from two addresses sharing ports.
    let by_client = masquerade_200(&net);
    // Listed now, while each of them is still in the table: a connection
    // the hosts end with a reset (a retransmitted FIN reaching a closed
    // socket when packets were lost on a loaded host) goes to CLOSE and
    // expires 10 s later, before the end of the test, as in the kernel.
    let listed_200 = ct_list(API);

    // Masqueraded UDP: 20 flows of 3 datagrams, every answer back.
    for f in udp_flows(&net, "198.51.100.2", 20, 3, "2")
        .as_array()
        .unwrap()
    {
        for a in f["answers"].as_array().unwrap() {
            assert_eq!(a["echo_ok"], true, "{f}");
            assert!(
                a["seen"].as_str().unwrap().starts_with("198.51.100.1 "),
                "{f}"
            );
        }
    }

    // DNAT: the outside reaches the inside server through ctgate's address.
    check_forwards(
        &net,
        "/hello.txt",
        "hello through several workers\n",
        &cli_log,
    );

    // Load balancing: 300 connections over the three backends, and one
    // long-lived connection that stays on its backend.
    let (per_backend, _) = load_balanced(&net, 81, 300, 100);
    assert_eq!(per_backend.len(), 3, "{per_backend:?}");
    assert!(per_backend.values().all(|&n| n >= 50), "{per_backend:?}");

    // `ctgate ct list`: every connection exactly once (the 200 in the
    // listing taken right after them).
    let listed = ct_list(API);
    for listing in [&listed_200, &listed] {
        let mut keys = BTreeMap::new();
        for l in listing {
            if let Some(earlier) = keys.insert(original_key(l), l) {
                panic!("listed twice:\n{earlier}\n{l}");
            }
        }
    }
    let many: Vec<&String> = listed_200
        .iter()
        .filter(|l| l.contains(" dport=9000 "))
        .collect();
    let listed_9000: BTreeSet<String> = many
        .iter()
        .map(|l| {
            let (o, _) = tuples(l);
            format!("{} {}", o.0, o.2)
        })
        .collect();
    let unlisted: Vec<&String> = by_client
        .keys()
        .filter(|k| !listed_9000.contains(*k))
        .collect();
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &many {
        assert!(l.contains("[ASSURED]"), "replies came back: {l}");
        *states
            .entry(l.split_whitespace().nth(5).unwrap_or(""))
            .or_default() += 1;
    }
    eprintln!("the 200 parallel connections' states: {states:?}");
    let balanced = listed.iter().filter(|l| l.contains(" dport=81 ")).count();

    let s = gate.stop();
    let lines = table(&s);
    // A connection missing from the listing: what the final table and the
    // events say about it.
    if !unlisted.is_empty() || many.len() != 200 {
        let final_lines: Vec<&String> = lines
            .iter()
            .filter(|l| {
                unlisted.iter().any(|k| {
                    l.contains(&format!("src={} ", k.split(' ').next().unwrap()))
                        && l.contains(&format!("sport={} ", k.split(' ').nth(1).unwrap()))
                        && l.contains(" dport=9000 ")
                })
            })
            .collect();
        panic!(
            "the 200 parallel connections, once each: {} listed, missing {unlisted:?}; \
             in the final table: {final_lines:#?}; stats: {:#}",
            many.len(),
            s.stats
        );
    }
    assert_eq!(balanced, 301, "the load-balanced connections");
    // Right after them, the table had every binding the server saw.
    assert_bindings(&listed_200, &by_client);
    // The final table has the bindings the server saw, but for connections
    // that closed with a reset and expired since (each was listed above, so
    // it existed, once; the expirations count them).
    let closed: BTreeMap<String, u16> = by_client
        .iter()
        .filter(|(k, _)| {
            !lines.iter().any(|l| {
                l.contains(" dport=9000 ") && {
                    let (o, _) = tuples(l);
                    &format!("{} {}", o.0, o.2) == *k
                }
            })
        })
        .map(|(k, p)| (k.clone(), *p))
        .collect();
    let expired = s.stats["conntrack"]["counters"]["expired"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        closed.len() as u64 <= expired,
        "connections gone from the final table without expiring: {closed:?}; stats: {:#}",
        s.stats
    );
    if !closed.is_empty() {
        eprintln!("closed and expired before the end: {closed:?}");
    }
    let remaining: BTreeMap<String, u16> = by_client
        .iter()
        .filter(|(k, _)| !closed.contains_key(*k))
        .map(|(k, p)| (k.clone(), *p))
        .collect();
    assert_bindings(&lines, &remaining);
    // One NAT binding (port or ICMP id) per masqueraded connection.
    let outside = ["198.51.100.1", "198.51.100.17", "2001:db8:2::1"];
    let masqueraded: Vec<&String> = lines
        .iter()
        .filter(|l| outside.contains(&tuples(l).1 .1.as_str()))
        .collect();
    // A binding is the whole reply tuple: one NAT port may serve several
    // remote endpoints (as in the kernel), never twice the same one.
    let bindings: BTreeSet<(String, String, String, String, String)> = masqueraded
        .iter()
        .map(|l| {
            let (_, r) = tuples(l);
            let proto = l.split_whitespace().nth(2).unwrap_or_default().to_owned();
            let id = fields(l)
                .into_iter()
                .filter(|(k, _)| k == "id")
                .nth(1)
                .map(|(_, v)| v);
            (proto, r.0, r.2, r.1, id.unwrap_or(r.3))
        })
        .collect();
    assert_eq!(
        bindings.len(),
        masqueraded.len(),
        "a binding shared: {masqueraded:#?}"
    );
    assert!(
        masqueraded.len() + closed.len() >= 200 + 20 + 3,
        "{}",
        masqueraded.len()
    );
    assert_eq!(
        s.stats["conntrack"]["nat_ports_in_use"].as_u64(),
        Some(masqueraded.len() as u64),
        "NAT ports in use"
    );
    // Every worker carried traffic and owned connections; what one handed
    // over, another took; no ring overflowed.
    let ws = s.stats["workers"].as_array().unwrap();
    assert_eq!(ws.len(), workers);
    let n = |w: &serde_json::Value, k: &str| w[k].as_u64().unwrap();
    for w in ws {
        assert!(n(w, "processed") > 100, "a worker idle: {ws:#?}");
        assert!(
            n(w, "new_connections") > 10,
            "a worker created nothing: {ws:#?}"
        );
    }
    let out: u64 = ws.iter().map(|w| n(w, "handoff_out")).sum();
    let inn: u64 = ws.iter().map(|w| n(w, "handoff_in")).sum();
    assert!(out > 0, "software dispatch handed nothing over: {ws:#?}");
    assert_eq!(out, inn, "handed off = taken over: {ws:#?}");
    assert_eq!(s.stats["totals"]["drops"]["handoff_full"], 0);
    let processed: u64 = ws.iter().map(|w| n(w, "processed")).sum();
    assert_eq!(processed, s.stats["totals"]["rx"].as_u64().unwrap());
    for (i, w) in ws.iter().enumerate() {
        assert!(
            s.stdout
                .contains(&format!("worker {i} (lcore {}): rx ", n(w, "lcore"))),
            "{}",
            s.stdout
        );
    }
    s.assert_balanced();
}

#[test]
fn two_workers_share_the_traffic_and_own_each_connection_once() {
    several_workers(2, 2);
}

/// Three workers on two queue pairs per port: the third polls no RX queue
/// (it only processes what the others hand it) and shares a TX queue.
#[test]
fn three_workers_share_the_traffic_and_own_each_connection_once() {
    several_workers(3, 2);
}

/// Debian's Prometheus scrapes ctgate's `/metrics` every second while real
/// traffic goes through (masquerade, DNAT, load balancing, packets it cannot
/// route); then every query of the Grafana dashboard
/// (docker/grafana/dashboards/ctgate.json) returns data from it, and the
/// alerting rules of docker/prometheus/ load into it.
#[test]
fn prometheus_answers_every_dashboard_query() {
    require_root();
    let prometheus = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("prometheus missing: scripts/setup.sh installs it (Debian package prometheus)");
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("nat-prometheus");
    let mut net = topology();
    const API: &str = "127.0.0.1:18192";
    const PROM: &str = "127.0.0.1:19192";
    let rules = format!(
        "{MASQUERADE}{FORWARDS}{}\n[rest]\nbind = \"{API}\"\n",
        load_balancer(81)
    );
    let gate = Gate::start(&dir.0, &config(&net, "", &rules));

    // Prometheus as an operator runs it: the shipped rules, scraping
    // ctgate's API; its storage in the test's directory.
    let prom_cfg = dir.path("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: ctgate\n    static_configs:\n      - targets: [\"{API}\"]\n",
            repo().join("docker/prometheus/rules.yml").display()
        ),
    )
    .unwrap();
    let mut prom = KillOnDrop(
        std::process::Command::new(prometheus)
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path("tsdb").display()
            ))
            .arg(format!("--web.listen-address={PROM}"))
            .arg("--log.level=warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let query = |expr: &str| -> serde_json::Value {
        let r = ureq::get(&format!("http://{PROM}/api/v1/query"))
            .query("query", expr)
            .timeout(Duration::from_secs(10))
            .call()
            .unwrap_or_else(|e| panic!("query {expr}: {e}"));
        let v: serde_json::Value = r.into_json().unwrap();
        assert_eq!(v["status"], "success", "{expr}: {v}");
        v
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while ureq::get(&format!("http://{PROM}/-/ready")).call().is_err() {
        if let Some(st) = prom.0.try_wait().unwrap() {
            panic!(
                "prometheus exited ({st}): {}",
                std::fs::read_to_string(dir.path("prometheus.log")).unwrap_or_default()
            );
        }
        assert!(Instant::now() < deadline, "prometheus not ready in 30 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rules_loaded: serde_json::Value = ureq::get(&format!("http://{PROM}/api/v1/rules"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let groups = rules_loaded["data"]["groups"].as_array().unwrap();
    assert!(
        !groups.is_empty()
            && groups
                .iter()
                .all(|g| !g["rules"].as_array().unwrap().is_empty()),
        "the rules of docker/prometheus/rules.yml: {rules_loaded}"
    );

    // Prometheus's first scrapes come a few seconds after it is ready (its
    // target discovery updates every 5 s): traffic only after two, so that
    // every counter's increase is in its samples.
    let value = |v: serde_json::Value| {
        v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let scrapes = || value(query("count_over_time(ctgate_uptime_seconds[1m])"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while scrapes() < 2.0 {
        assert!(
            Instant::now() < deadline,
            "prometheus did not scrape ctgate in 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Traffic: masqueraded ICMP and HTTP, DNAT to the inside server, load
    // balancing over the backends, and pings ctgate cannot route.
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.txt"), "hello, prometheus\n").unwrap();
    let www = www.display().to_string();
    let srv_log = dir.path("srv-http.log").display().to_string();
    let cli_log = dir.path("cli-http.log").display().to_string();
    http_server(&mut net, "srv", "::", 8080, &www, &srv_log);
    http_server(&mut net, "cli", "192.0.2.2", 8080, &www, &cli_log);
    serve(
        &mut net,
        "cli",
        120,
        &["udp-serve", "192.0.2.2", "5353", "110"],
    );
    for b in ["be1", "be2", "be3"] {
        serve(
            &mut net,
            b,
            120,
            &["tcp-serve", "0.0.0.0", "8080", b, "110"],
        );
    }
    let started = Instant::now();
    net.check(
        "cli",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.51.100.2"],
        30,
    );
    assert_eq!(
        curl(&net, "cli", "http://198.51.100.2:8080/hello.txt"),
        "hello, prometheus\n"
    );
    check_forwards(&net, "/hello.txt", "hello, prometheus\n", &cli_log);
    let (per_backend, _) = load_balanced(&net, 81, 30, 10);
    assert_eq!(per_backend.len(), 3, "{per_backend:?}");
    // A destination ctgate has no route for (in cli's route through ctgate,
    // outside ctgate's prefixes): dropped as no_route.
    let lost = net
        .cmd(
            "cli",
            &["ping", "-c", "2", "-i", "0.2", "-W", "1", "198.51.100.100"],
        )
        .output()
        .unwrap();
    assert!(!lost.status.success(), "198.51.100.100 answered");

    // Enough scrapes for rate() over a minute: at least 5, and Prometheus
    // has seen the last of the traffic (the unroutable pings) in a scrape.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = scrapes();
        let unroutable = value(query(
            "sum(ctgate_dropped_packets_total{reason=\"no_route\"})",
        ));
        if n >= 5.0 && unroutable >= 2.0 && started.elapsed() > Duration::from_secs(6) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus scraped {n} times in 30 s and saw {unroutable} no_route drops"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        query("up{job=\"ctgate\"}")["data"]["result"][0]["value"][1],
        "1"
    );

    // Every query of the dashboard returns data.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docker/grafana/dashboards/ctgate.json")).unwrap(),
    )
    .unwrap();
    let mut empty = Vec::new();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            let v = query(expr);
            let series = v["data"]["result"].as_array().map_or(0, Vec::len);
            eprintln!(
                "dashboard query: {:<70} {series} series ({})",
                expr,
                panel["title"].as_str().unwrap_or_default()
            );
            if series == 0 {
                empty.push(format!("{:?}: {expr}", panel["title"]));
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked} queries");
    assert!(empty.is_empty(), "queries without data: {empty:#?}");

    drop(prom);
    let s = gate.stop();
    s.assert_balanced();
}

/// A child process killed (and reaped) when the test lets go of it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

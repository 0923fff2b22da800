//! The REST API and the `ctgate ct` / `ctgate stats` clients over real HTTP,
//! against the running appliance between two network namespaces
//! (scripts/testbed.sh, net_af_packet on veth pairs): every endpoint, auth
//! failures, bad requests, filters, deleting a live TCP connection, the events
//! of a curl request in order, /metrics through a Prometheus text parser.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// Namespace prefix of this test's test bed.
const P: &str = "ctra";
const API: &str = "127.0.0.1:18181";
const TOKEN: &str = "rest-test-token-0123456789";

fn in_ns(ns: &str, args: &[&str]) -> Command {
    support::in_ns(P, ns, args)
}

/// Lines of a reader, through a channel (so the test can wait with a bound).
fn lines_of(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (bounded) for a line satisfying `want`; returns it.
fn wait_line(rx: &Receiver<String>, secs: u64, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: not seen; got:\n{}",
            seen.join("\n")
        );
        if let Ok(l) = rx.recv_timeout(left.min(Duration::from_millis(200))) {
            if want(&l) {
                return l;
            }
            seen.push(l);
        }
    }
}

/// One HTTP call: (status, JSON body or the body as a string).
fn call(method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut req =
        ureq::request(method, &format!("http://{API}{path}")).timeout(Duration::from_secs(20));
    if let Some(t) = token {
        req = req.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let resp = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

fn get(path: &str) -> Value {
    let (s, v) = call("GET", path, Some(TOKEN), None);
    assert_eq!(s, 200, "GET {path}: {v}");
    v
}

fn assert_error(status: u16, v: &Value, want: u16, what: &str) {
    assert_eq!(status, want, "{what}: {v}");
    assert!(
        v["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: a JSON error body: {v}"
    );
}

/// Connections matching a query.
fn conns(query: &str) -> Vec<Value> {
    get(&format!("/api/v1/conntrack?{query}"))["connections"]
        .as_array()
        .unwrap()
        .clone()
}

/// Packets the policy's default (drop) decided so far.
fn policy_default_packets() -> u64 {
    let s = get("/api/v1/stats");
    s["policy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["rule"] == "default")
        .unwrap()["packets"]
        .as_u64()
        .unwrap()
}

/// A TCP endpoint in a namespace that sends its stdin lines and prints
/// "got LINE" for what it receives.
const BRIDGE: &str = r#"
import socket, sys, threading
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "serve":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(1)
    print("listening", flush=True)
    c, _ = s.accept()
else:
    c = socket.create_connection((host, port), timeout=10)
    c.settimeout(None)
print("connected", flush=True)
def rd():
    for line in c.makefile("r"):
        print("got " + line.strip(), flush=True)
    print("closed", flush=True)
threading.Thread(target=rd, daemon=True).start()
for line in sys.stdin:
    c.sendall(line.encode())
"#;

struct Endpoint {
    stdin: ChildStdin,
    out: Receiver<String>,
}

impl Endpoint {
    fn start(bed: &mut Bed, ns: &str, args: &[&str]) -> Endpoint {
        let mut c = in_ns(ns, &["timeout", "300", "python3", "-u", "-c", BRIDGE])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = c.stdin.take().unwrap();
        let out = lines_of(c.stdout.take().unwrap());
        bed.children.push(c);
        Endpoint { stdin, out }
    }
    fn send(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }
    fn expect(&self, line: &str) {
        wait_line(&self.out, 60, line, |l| l == line);
    }
}

/// A parsed server-sent event: (event name, data).
fn sse_events(r: impl Read + Send + 'static) -> Receiver<(String, Value)> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut name = String::new();
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                let v: Value = serde_json::from_str(d.trim()).unwrap();
                if tx.send((name.clone(), v)).is_err() {
                    break;
                }
            }
        }
    });
    rx
}

const TCP_ORDER: [&str; 9] = [
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

#[test]
fn rest_api_against_the_running_appliance() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("rest");
    let mut bed = Bed::up(P);

    // The built-in test bed config (stateful policy, masquerade) on this
    // test's namespaces, a pool for the health endpoint, and the REST section.
    // IPv4 masquerade only for port 8080: without NAT, what the server of the
    // deleted connection (port 7000) sends is forwarded to the client's
    // address, through the policy (with NAT it would be for ctgate itself).
    let config = format!(
        "{}\n[[nat]]\nname = \"web-vip\"\nin_port = \"cli\"\ndst = \"192.0.2.100\"\nproto = \"tcp\"\ndport = \"80\"\naction = \"dnat to pool web\"\n\n[[pool]]\nname = \"web\"\nbackends = [\"198.51.100.2:8080\", \"198.51.100.3:8080\"]\n\n[rest]\nbind = \"{API}\"\ntoken = \"{TOKEN}\"\n",
        appliance::config::TESTBED_DEFAULT
            .replace("ctgw-", &format!("{P}-"))
            .replace("eal_args = [\"--in-memory\"]", &eal_args_toml())
            .replace(
                "src = \"192.0.2.0/24\"\n",
                "src = \"192.0.2.0/24\"\nproto = \"tcp\"\ndport = \"8080\"\n"
            )
    );
    std::fs::write(dir.path("ctgate.toml"), config).unwrap();
    let mut gate = Command::new(ctgate())
        .args(["run", "--duration", "300", "--config"])
        .arg(dir.path("ctgate.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = lines_of(gate.stderr.take().unwrap());
    let gate_out = gate.stdout.take().unwrap();
    let pid = gate.id();
    bed.children.push(gate);
    wait_line(&log, 30, "ctgate forwarding", |l| l.contains("forwarding;"));

    // Health, 404, 405.
    let h = get("/healthz");
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(h["capacity"], 65536);
    assert_eq!(h["table_pressure_recent"], false);
    let (s, v) = call("GET", "/api/v1/nothing", None, None);
    assert_error(s, &v, 404, "unknown path");
    let (s, v) = call("PATCH", "/api/v1/timeouts", Some(TOKEN), Some("{}"));
    assert_error(s, &v, 405, "wrong method");

    // Authorisation of every mutating call, and of every read of connection
    // data; the rest stays open.
    for (m, path, body) in [
        ("GET", "/api/v1/conntrack", None),
        ("GET", "/api/v1/conntrack/count?proto=tcp", None),
        ("GET", "/api/v1/conntrack/events", None),
        ("DELETE", "/api/v1/conntrack?proto=tcp", None),
        ("POST", "/api/v1/conntrack/flush", None),
        ("PUT", "/api/v1/timeouts", Some(r#"{"udp_timeout": 10}"#)),
        (
            "PUT",
            "/api/v1/nat/pools/web/backends/1",
            Some(r#"{"healthy": false}"#),
        ),
    ] {
        let (s, v) = call(m, path, None, body);
        assert_error(s, &v, 401, &format!("{m} {path} without a token"));
        let (s, v) = call(m, path, Some("rest-test-token-0123456788"), body);
        assert_error(s, &v, 401, &format!("{m} {path} with a wrong token"));
    }
    for path in [
        "/healthz",
        "/api/v1/stats",
        "/api/v1/ports",
        "/api/v1/nat",
        "/api/v1/timeouts",
        "/metrics",
    ] {
        let (s, v) = call("GET", path, None, None);
        assert_eq!(s, 200, "GET {path} without a token: {v}");
    }
    assert_eq!(
        get("/api/v1/timeouts")["udp_timeout"],
        30,
        "refused calls change nothing"
    );

    // Malformed requests.
    for (m, path, body, what) in [
        ("PUT", "/api/v1/timeouts", Some("{"), "truncated JSON"),
        ("PUT", "/api/v1/timeouts", Some("[1]"), "not an object"),
        (
            "PUT",
            "/api/v1/timeouts",
            Some(r#"{"tcp_timeout_established": "long"}"#),
            "not a number",
        ),
        (
            "PUT",
            "/api/v1/timeouts",
            Some(r#"{"tcp_timeout_forever": 1}"#),
            "unknown timeout",
        ),
        (
            "PUT",
            "/api/v1/nat/pools/web/backends/0",
            Some(r#"{"healthy": "no"}"#),
            "health not a bool",
        ),
        ("GET", "/api/v1/conntrack?src=bogus", None, "bad address"),
        ("GET", "/api/v1/conntrack?dport=70000", None, "bad port"),
        (
            "GET",
            "/api/v1/conntrack?colour=red",
            None,
            "unknown filter",
        ),
        ("GET", "/api/v1/conntrack?limit=0", None, "bad limit"),
        (
            "DELETE",
            "/api/v1/conntrack",
            None,
            "delete without a filter",
        ),
    ] {
        let (s, v) = call(m, path, Some(TOKEN), body);
        assert_error(s, &v, 400, what);
    }
    for (path, what) in [
        ("/api/v1/nat/pools/nope/backends/0", "unknown pool"),
        ("/api/v1/nat/pools/web/backends/9", "unknown backend"),
    ] {
        let (s, v) = call("PUT", path, Some(TOKEN), Some(r#"{"healthy": true}"#));
        assert_error(s, &v, 404, what);
    }

    // Malformed HTTP, and many slow clients holding half-sent requests: the
    // server answers them 400 / keeps them waiting, and answers others.
    let mut raw = TcpStream::connect(API).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    raw.write_all(b"NOT HTTP AT ALL\r\n\r\n").unwrap();
    let mut answer = String::new();
    let _ = raw.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let slow: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(API).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    assert_eq!(get("/healthz")["status"], "ok");
    drop(slow);
    // A client that never finishes its headers loses its connection (EOF,
    // with or without a 408), rather than holding it.
    let mut silent = TcpStream::connect(API).unwrap();
    silent.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut rest = Vec::new();
    silent
        .read_to_end(&mut rest)
        .expect("the server closes a connection whose headers never complete");

    // Subscribe to events (raw SSE, and the CLI) before any TCP connection.
    let sse = ureq::get(&format!("http://{API}/api/v1/conntrack/events?proto=tcp"))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(sse.content_type(), "text/event-stream");
    let events = sse_events(sse.into_reader());
    let mut cli_events = Command::new(ctgate())
        .args(["ct", "events", "-p", "tcp", "--dport", "8080"])
        .env("CTGATE_API", format!("http://{API}"))
        .env("CTGATE_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let cli_event_lines = lines_of(cli_events.stdout.take().unwrap());
    bed.children.push(cli_events);
    // The CLI is subscribed once the server counts two subscribers.
    let deadline = Instant::now() + Duration::from_secs(20);
    while get("/api/v1/stats")["conntrack"]["events"]["subscribers"] != 2 {
        assert!(Instant::now() < deadline, "ct events never subscribed");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A curl request through the gateway: its events, in order.
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello through ctgate\n").unwrap();
    let http = in_ns(
        "srv",
        &[
            "timeout",
            "200",
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            "198.51.100.2",
            "--directory",
        ],
    )
    .arg(&www)
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    bed.children.push(http);
    let mut sport = None;
    for _ in 0..50 {
        let out = run_for(
            &mut in_ns(
                "cli",
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "10",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{local_port}",
                    "http://198.51.100.2:8080/index.html",
                ],
            ),
            20,
        );
        if out.status.success() {
            sport = Some(
                String::from_utf8_lossy(&out.stdout)
                    .trim()
                    .parse::<u16>()
                    .unwrap(),
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let sport = sport.expect("curl through ctgate never succeeded");
    let mut states: Vec<(String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !states.iter().any(|(_, s)| s == "TIME_WAIT") {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no TIME_WAIT event: {states:?}");
        if let Ok((name, v)) = events.recv_timeout(left) {
            if v["orig"]["sport"] == sport && v["orig"]["dport"] == 8080 {
                assert_eq!(v["type"].as_str().unwrap().to_lowercase(), name);
                states.push((name, v["state"].as_str().unwrap().to_owned()));
            }
        }
    }
    assert_eq!(
        states[0],
        ("new".to_string(), "SYN_SENT".to_string()),
        "{states:?}"
    );
    assert!(states[1..].iter().all(|(n, _)| n == "update"), "{states:?}");
    let order: Vec<usize> = states
        .iter()
        .map(|(_, s)| TCP_ORDER.iter().position(|o| o == s).unwrap())
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "states in the TCP state machine's order: {states:?}"
    );
    for want in ["SYN_RECV", "ESTABLISHED", "TIME_WAIT"] {
        assert!(states.iter().any(|(_, s)| s == want), "{want}: {states:?}");
    }
    // The CLI printed the same, as conntrack -E lines.
    let port_tag = format!("sport={sport} dport=8080");
    let first = wait_line(&cli_event_lines, 20, "ct events: NEW", |l| {
        l.contains(&port_tag)
    });
    assert!(
        first.starts_with("    [NEW] ipv4     2 tcp      6 ") && first.contains("SYN_SENT"),
        "{first}"
    );
    wait_line(&cli_event_lines, 20, "ct events: TIME_WAIT", |l| {
        l.contains(&port_tag) && l.starts_with(" [UPDATE]") && l.contains(" TIME_WAIT ")
    });

    // Listing with filters, orig and reply side, and the CLI's exact lines.
    let q = format!("proto=tcp&sport={sport}&dport=8080");
    let listed = conns(&q);
    assert_eq!(listed.len(), 1, "{listed:?}");
    let c = &listed[0];
    assert_eq!(c["state"], "TIME_WAIT");
    assert_eq!(c["orig"]["src"], "192.0.2.2");
    assert_eq!(c["reply"]["dst"], "198.51.100.1", "masqueraded: {c}");
    assert!(c["status"].as_array().unwrap().contains(&json!("ASSURED")));
    let line = c["line"].as_str().unwrap();
    assert!(
        line.starts_with("ipv4     2 tcp      6 ")
            && line.contains(&format!(
                " TIME_WAIT src=192.0.2.2 dst=198.51.100.2 sport={sport} dport=8080 packets="
            ))
            && line.contains("src=198.51.100.2 dst=198.51.100.1 sport=8080 dport=")
            && line.ends_with(" [ASSURED] mark=0 use=1"),
        "{line}"
    );
    assert_eq!(conns(&format!("{q}&reply-dst=198.51.100.1")).len(), 1);
    assert_eq!(
        conns(&format!("{q}&reply-dst=198.51.100.0/24&status=ASSURED")).len(),
        1
    );
    assert_eq!(conns(&format!("{q}&reply-dst=198.51.100.2")).len(), 0);
    assert_eq!(conns(&format!("{q}&state=ESTABLISHED")).len(), 0);
    assert_eq!(conns(&format!("{q}&status=UNREPLIED")).len(), 0);
    assert_eq!(conns(&format!("{q}&family=ipv6")).len(), 0);
    assert_eq!(conns(&format!("{q}&zone=0&mark=0")).len(), 1);
    let cli = Command::new(ctgate())
        .args(["ct", "list", "-p", "tcp", "--sport", &sport.to_string()])
        .env("CTGATE_API", format!("http://{API}"))
        .env("CTGATE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(cli.status.success(), "{cli:?}");
    let cli_line = String::from_utf8(cli.stdout).unwrap();
    // Same connection, same line but for the seconds left, which may tick, and
    // the counters, which a late segment (a retransmitted FIN) may move.
    let strip_timeout = |l: &str| {
        let mut w: Vec<&str> = l.split_whitespace().collect();
        w.remove(4);
        w.retain(|t| !t.starts_with("packets=") && !t.starts_with("bytes="));
        w.join(" ")
    };
    assert_eq!(strip_timeout(cli_line.trim_end()), strip_timeout(line));
    let count = Command::new(ctgate())
        .args(["ct", "count", "-p", "tcp", "--sport", &sport.to_string()])
        .env("CTGATE_API", format!("http://{API}"))
        .env("CTGATE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&count.stdout).trim(), "1");
    assert_eq!(get(&format!("/api/v1/conntrack/count?{q}"))["count"], 1);
    // Pagination: pages of one connection cover the table once.
    let total = get("/api/v1/conntrack?limit=1")["total"].as_u64().unwrap();
    assert!(total >= 1);
    let mut ids = std::collections::BTreeSet::new();
    for offset in 0..total {
        let page = get(&format!("/api/v1/conntrack?limit=1&offset={offset}"));
        for c in page["connections"].as_array().unwrap() {
            ids.insert(c["id"].as_u64().unwrap());
        }
    }
    assert_eq!(ids.len() as u64, total);

    // A live TCP connection, deleted: its next packet meets the policy as a
    // connection the table does not know.
    let server = Endpoint::start(&mut bed, "srv", &["serve", "198.51.100.2", "7000"]);
    server.expect("listening");
    let mut client = Endpoint::start(&mut bed, "cli", &["connect", "198.51.100.2", "7000"]);
    client.expect("connected");
    let mut server = server;
    server.expect("connected");
    client.send("one");
    server.expect("got one");
    server.send("two");
    client.expect("got two");
    let live = conns("proto=tcp&dport=7000");
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["state"], "ESTABLISHED");
    let (s, v) = call(
        "DELETE",
        "/api/v1/conntrack?proto=tcp&dport=7000",
        Some(TOKEN),
        None,
    );
    assert_eq!((s, &v["deleted"]), (200, &json!(1)), "{v}");
    assert!(conns("proto=tcp&dport=7000").is_empty());
    // Its DESTROY event.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (name, v) = events
            .recv_timeout(left)
            .expect("no DESTROY event for the deleted connection");
        if name == "destroy" && v["orig"]["dport"] == 7000 {
            assert!(
                v["line"].as_str().unwrap().starts_with("[DESTROY] ipv4"),
                "{v}"
            );
            break;
        }
    }
    // The server speaks first: from srv, a packet the table does not know is
    // NEW on the outside port, which the policy drops (its default).
    let before = policy_default_packets();
    server.send("three");
    let deadline = Instant::now() + Duration::from_secs(30);
    while policy_default_packets() <= before {
        assert!(
            Instant::now() < deadline,
            "the server's packet never reached the policy"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        conns("proto=tcp&dport=7000").is_empty(),
        "a dropped packet creates no connection"
    );
    assert!(
        client.out.try_iter().all(|l| l != "got three"),
        "the dropped segment did not arrive"
    );
    // The client speaks: from cli, NEW is accepted (mid-stream pickup), the
    // connection is back, and the server's retransmission then gets through.
    client.send("four");
    server.expect("got four");
    client.expect("got three");
    let back = conns("proto=tcp&dport=7000");
    assert_eq!(back.len(), 1, "{back:?}");

    // Timeouts: read, change, see the change applied to the next packet.
    let t = get("/api/v1/timeouts");
    assert_eq!(t["tcp_timeout_established"], 432000, "{t}");
    assert_eq!(t["udp_timeout"], 30);
    let (s, v) = call(
        "PUT",
        "/api/v1/timeouts",
        Some(TOKEN),
        Some(r#"{"tcp_timeout_established": 3600, "udp_timeout": 20}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["tcp_timeout_established"], 3600);
    assert_eq!(get("/api/v1/timeouts")["udp_timeout"], 20);
    client.send("five");
    server.expect("got five");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = conns("proto=tcp&dport=7000&state=ESTABLISHED");
        if c.len() == 1 && c[0]["timeout_s"].as_u64().unwrap() <= 3600 {
            break;
        }
        assert!(Instant::now() < deadline, "new timeout not applied: {c:?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Ports.
    let ports = get("/api/v1/ports");
    let ports = ports.as_array().unwrap();
    assert_eq!(ports.len(), 2);
    for (p, name) in ports.iter().zip(["cli", "srv"]) {
        assert_eq!(p["name"], name);
        assert_eq!(p["driver"], "net_af_packet");
        assert_eq!(p["link_up"], true);
        assert!(p["nic"]["ipackets"].as_u64().unwrap() > 0, "{p}");
        assert!(p["rx_packets"].as_u64().unwrap() > 0, "{p}");
        assert!(!p["xstats"].as_object().unwrap().is_empty(), "{p}");
    }

    // NAT: rules, pools, backend health.
    let nat = get("/api/v1/nat");
    let masq = nat["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "masquerade-v4")
        .unwrap();
    assert_eq!(masq["action"], "masquerade");
    assert!(masq["translations"].as_u64().unwrap() >= 2, "{nat}");
    assert_eq!(nat["pools"][0]["healthy_backends"], 2);
    let (s, v) = call(
        "PUT",
        "/api/v1/nat/pools/web/backends/1",
        Some(TOKEN),
        Some(r#"{"healthy": false}"#),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["backends"][1]["healthy"], false);
    assert_eq!(get("/api/v1/nat")["pools"][0]["healthy_backends"], 1);

    // Stats: per lcore, per port, conntrack counters, heavy hitters.
    let st = get("/api/v1/stats");
    assert_eq!(st["lcores"].as_array().unwrap().len(), 1);
    assert_eq!(st["lcores"][0]["lcore"], 1);
    assert!(
        st["conntrack"]["counters"]["new"].as_u64().unwrap() >= 3,
        "{st}"
    );
    assert!(st["conntrack"]["counters"]["found"].as_u64().unwrap() > 0);
    // Known connections' answers are cached (their second packets on).
    let vc = &st["conntrack"]["verdict_cache"];
    assert!(vc["entries"].as_u64().unwrap() >= 1, "{vc}");
    assert_eq!(vc["capacity"], 65535);
    assert_eq!(vc["full"], 0);
    assert!(vc["answered"].as_u64().unwrap() >= 1, "{vc}");
    assert!(st["totals"]["drops"]["policy"].as_u64().unwrap() >= 1);
    assert_eq!(st["heavy_hitters"][0]["src"], "192.0.2.2", "{st}");
    assert!(st["heavy_hitters"][0]["new_connections"].as_u64().unwrap() >= 2);
    assert_eq!(st["ports"][0]["name"], "cli");
    let stats_cli = Command::new(ctgate())
        .arg("stats")
        .env("CTGATE_API", format!("http://{API}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&stats_cli.stdout);
    assert!(stats_cli.status.success(), "{stats_cli:?}");
    assert!(
        text.contains("top sources of new connections: 192.0.2.2"),
        "{text}"
    );
    assert!(
        text.contains("nat        masquerade-v4 (masquerade)"),
        "{text}"
    );

    // /metrics through a Prometheus text-format parser.
    let resp = ureq::get(&format!("http://{API}/metrics")).call().unwrap();
    assert!(
        resp.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        resp.header("content-type")
    );
    let body = resp.into_string().unwrap();
    // Prometheus's own linter (Debian package prometheus) finds nothing:
    // names, units (base units only), help texts, counter suffixes.
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool missing: scripts/setup.sh installs it (Debian package prometheus)");
    std::io::Write::write_all(&mut lint.stdin.take().unwrap(), body.as_bytes()).unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success() && lint.stdout.is_empty() && lint.stderr.is_empty(),
        "promtool check metrics on /metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let sample = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no sample {name} {labels:?} in:\n{body}"));
        match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    assert!(sample("ctgate_conntrack_new_total", &[("lcore", "1")]) >= 3.0);
    assert!(
        sample(
            "ctgate_rx_packets_total",
            &[("port", "cli"), ("lcore", "1")]
        ) > 0.0
    );
    assert!(
        sample(
            "ctgate_dropped_packets_total",
            &[("reason", "policy"), ("lcore", "1")]
        ) >= 1.0
    );
    assert!(sample("ctgate_conntrack_connections", &[]) >= 1.0);
    assert_eq!(
        sample("ctgate_conntrack_capacity_connections", &[]),
        65536.0
    );
    // A table this small keeps its regions off the hugetlb pools.
    assert_eq!(
        sample("ctgate_conntrack_table_bytes", &[("pages", "1g")]),
        0.0
    );
    assert_eq!(
        sample("ctgate_conntrack_table_bytes", &[("pages", "2m")]),
        0.0
    );
    assert!(
        sample(
            "ctgate_nat_translations_total",
            &[("rule", "masquerade-v4")]
        ) >= 2.0
    );
    assert_eq!(
        sample(
            "ctgate_nat_backend_healthy",
            &[("pool", "web"), ("backend", "198.51.100.3:8080")]
        ),
        0.0
    );
    assert!(sample("ctgate_port_rx_packets_total", &[("port", "srv")]) > 0.0);
    assert_eq!(sample("ctgate_conntrack_table_pressure", &[]), 0.0);
    assert_eq!(sample("ctgate_conntrack_event_subscribers", &[]), 2.0);
    assert!(sample("ctgate_policy_packets_total", &[("rule", "established")]) > 0.0);
    assert!(sample("ctgate_verdict_cache_entries", &[]) >= 1.0);
    assert_eq!(sample("ctgate_verdict_cache_full_total", &[]), 0.0);
    assert!(sample("ctgate_verdict_cache_answered_total", &[]) >= 1.0);
    let types: HashMap<&str, &str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    for (name, kind) in &types {
        assert_eq!(
            name.ends_with("_total"),
            *kind == "counter",
            "{name} is a {kind}: counters and only counters end in _total"
        );
        assert!(name.starts_with("ctgate_"), "{name}");
    }

    // Every metric the Grafana dashboard (docker/) queries exists.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("docker/grafana/dashboards/ctgate.json")).unwrap(),
    )
    .unwrap();
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("ctgate_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    types.contains_key(name.as_str()),
                    "dashboard panel {:?} queries {name}, which /metrics lacks",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried > 20);

    // Flush through the CLI (token from the environment): every connection
    // goes, each with a DESTROY event.
    let flush = Command::new(ctgate())
        .args(["ct", "flush"])
        .env("CTGATE_API", format!("http://{API}"))
        .env("CTGATE_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(flush.status.success(), "{flush:?}");
    assert!(String::from_utf8_lossy(&flush.stderr).contains("has been emptied"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let (name, v) = events
            .recv_timeout(left)
            .expect("no DESTROY event from the flush");
        if name == "destroy" && v["orig"]["sport"] == sport {
            break;
        }
    }
    let unauthorised = Command::new(ctgate())
        .args(["ct", "delete", "-p", "tcp", "--token-file", "/nonexistent"])
        .env("CTGATE_API", format!("http://{API}"))
        .env_remove("CTGATE_TOKEN")
        .output()
        .unwrap();
    assert!(!unauthorised.status.success());
    assert!(
        String::from_utf8_lossy(&unauthorised.stderr).contains("401"),
        "{unauthorised:?}"
    );

    // SIGTERM with event streams open: ctgate still stops cleanly.
    sigterm(bed.children.iter().find(|c| c.id() == pid).unwrap());
    let gate = bed.children.iter_mut().find(|c| c.id() == pid).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = gate.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "ctgate did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let _ = BufReader::new(gate_out).read_to_string(&mut out);
    assert!(status.success(), "ctgate exit {status}: {out}");
}

/// Starts `cmd` (a `ctgate run`; stdout dropped), the child into `bed`;
/// waits for "forwarding" on its log. The log and the pid.
fn start_gate(bed: &mut Bed, cmd: &mut Command) -> (Receiver<String>, u32) {
    let mut gate = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = lines_of(gate.stderr.take().unwrap());
    let pid = gate.id();
    bed.children.push(gate);
    wait_line(&log, 30, "ctgate forwarding", |l| l.contains("forwarding;"));
    (log, pid)
}

/// ctgate on the test bed with an 8-connection table and `rest` as its
/// `[rest]` section; returns its log once it forwards (the gate is in `bed`).
fn start_small_table(bed: &mut Bed, dir: &TempDir, rest: &str) -> Receiver<String> {
    let config = format!(
        "{}\n[rest]\n{rest}\n",
        appliance::config::TESTBED_DEFAULT
            .replace("ctgw-", &format!("{P}-"))
            .replace("eal_args = [\"--in-memory\"]", &eal_args_toml())
            .replace("max_connections = 65536", "max_connections = 8")
    );
    std::fs::write(dir.path("ctgate.toml"), config).unwrap();
    let mut cmd = Command::new(ctgate());
    cmd.args(["run", "--duration", "120", "--config"])
        .arg(dir.path("ctgate.toml"));
    start_gate(bed, &mut cmd).0
}

/// 40 UDP flows from distinct source ports from cli: more than the
/// 8-connection table holds.
fn flood_small_table() {
    let flood = r#"
import socket
for i in range(40):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", ("198.51.100.2", 9))
    s.close()
"#;
    let out = run_for(&mut in_ns("cli", &["python3", "-c", flood]), 30);
    assert!(out.status.success(), "{out:?}");
}

/// A full table is impossible to miss: a log line, /healthz, a metric.
#[test]
fn table_pressure_is_reported() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("rest-full");
    let mut bed = Bed::up(P);
    const API2: &str = "127.0.0.1:18182";
    let log = start_small_table(
        &mut bed,
        &dir,
        &format!("bind = \"{API2}\"\ntoken = \"{TOKEN}\""),
    );
    let health = || -> Value {
        ureq::get(&format!("http://{API2}/healthz"))
            .call()
            .unwrap()
            .into_json()
            .unwrap()
    };
    assert_eq!(health()["status"], "ok");

    // 40 UDP flows into an 8-connection table: unreplied (unassured)
    // connections are evicted (early_drop).
    flood_small_table();
    let deadline = Instant::now() + Duration::from_secs(30);
    let h = loop {
        let h = health();
        if h["table_pressure_recent"] == true {
            break h;
        }
        assert!(Instant::now() < deadline, "no table pressure reported: {h}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(h["status"], "warning", "{h}");
    assert!(h["early_drop_total"].as_u64().unwrap() > 0, "{h}");
    assert!(
        h["warnings"][0]
            .as_str()
            .unwrap()
            .contains("conntrack table full"),
        "{h}"
    );
    assert_eq!(h["connections"], 8, "{h}");
    let metrics = ureq::get(&format!("http://{API2}/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "ctgate_conntrack_table_pressure 1"),
        "{metrics}"
    );
    assert!(metrics.lines().any(|l| l
        .starts_with("ctgate_conntrack_early_drop_total{lcore=\"1\"} ")
        && !l.ends_with(" 0")));
    wait_line(&log, 30, "table pressure log line", |l| {
        l.contains("WARN") && l.contains("conntrack table pressure")
    });
}

/// An event subscriber that stops reading while events pour in (40,000 of
/// them: new connections into an 8-connection table, each evicted again) is
/// dropped once ctgate could write nothing to it for 10 s: its stream slot
/// comes free, while a subscriber that reads keeps its stream.
#[test]
fn a_subscriber_that_stops_reading_is_dropped() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("rest-stalled");
    let mut bed = Bed::up(P);
    const API4: &str = "127.0.0.1:18185";
    start_small_table(
        &mut bed,
        &dir,
        &format!("bind = \"{API4}\"\ntoken = \"{TOKEN}\""),
    );
    let subscribers = || -> u64 {
        let m = ureq::get(&format!("http://{API4}/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        m.lines()
            .find_map(|l| l.strip_prefix("ctgate_conntrack_event_subscribers "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no subscriber gauge: {m}"))
    };
    // The stalled subscriber: a 1 KiB receive buffer, and never a read.
    let stalled = format!(
        r#"
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
s.connect(("127.0.0.1", {port}))
s.sendall(b"GET /api/v1/conntrack/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n")
print("subscribed", flush=True)
time.sleep(60)
"#,
        port = API4.rsplit(':').next().unwrap()
    );
    let mut holder = Command::new("/usr/bin/python3")
        .args(["-c", &stalled])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let said = lines_of(holder.stdout.take().unwrap());
    bed.children.push(holder);
    wait_line(&said, 10, "stalled subscriber", |l| l == "subscribed");
    // A subscriber that reads everything.
    let mut reader = TcpStream::connect(API4).unwrap();
    reader
        .write_all(
            format!(
                "GET /api/v1/conntrack/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let events = sse_events(reader);
    let deadline = Instant::now() + Duration::from_secs(10);
    while subscribers() != 2 {
        assert!(Instant::now() < deadline, "subscribers: {}", subscribers());
        std::thread::sleep(Duration::from_millis(100));
    }
    let flood = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(20000):
    s.sendto(b"x", ("198.51.100.2", 1024 + i % 60000))
"#;
    let t = Instant::now();
    let out = run_for(&mut in_ns("cli", &["python3", "-c", flood]), 60);
    assert!(out.status.success(), "{out:?}");
    // Within the write timeout (10 s) of the flood's end, and some slack.
    let deadline = Instant::now() + Duration::from_secs(25);
    while subscribers() != 1 {
        assert!(
            Instant::now() < deadline,
            "the stalled subscriber still holds its stream {:?} after the flood began",
            t.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut seen = 0;
    while events.recv_timeout(Duration::from_millis(200)).is_ok() {
        seen += 1;
    }
    assert!(seen > 1000, "the reading subscriber got {seen} events");
}

/// The table-full warning comes from the control thread: logged with the
/// REST API off too.
#[test]
fn table_pressure_is_logged_without_the_api() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("rest-full-noapi");
    let mut bed = Bed::up(P);
    let log = start_small_table(&mut bed, &dir, "enabled = false");
    flood_small_table();
    wait_line(&log, 30, "table pressure log line", |l| {
        l.contains("WARN") && l.contains("conntrack table pressure")
    });
}

/// DPDK tooling on a multi-process run (not --in-memory): the /ctgate
/// telemetry commands answer, and dpdk-dumpcap captures on a port.
#[test]
fn telemetry_and_dumpcap() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("rest-tooling");
    let mut bed = Bed::up(P);
    let prefix = format!("ctgate-tooling-{}", std::process::id());
    let mut eal: Vec<String> = eal_args()
        .into_iter()
        .filter(|a| a != "--in-memory" && !a.starts_with("--file-prefix"))
        .collect();
    eal.extend(["--file-prefix".to_string(), prefix.clone()]);
    let eal_toml: Vec<String> = eal.iter().map(|a| format!("{a:?}")).collect();
    let config = format!(
        "{}\n[rest]\nbind = \"127.0.0.1:18183\"\ntoken = \"{TOKEN}\"\n",
        appliance::config::TESTBED_DEFAULT
            .replace("ctgw-", &format!("{P}-"))
            .replace(
                "eal_args = [\"--in-memory\"]",
                &format!("eal_args = [{}]", eal_toml.join(", "))
            )
    );
    std::fs::write(dir.path("ctgate.toml"), config).unwrap();
    let mut cmd = Command::new(ctgate());
    cmd.args(["run", "--duration", "120", "--config"])
        .arg(dir.path("ctgate.toml"));
    let (_log, pid) = start_gate(&mut bed, &mut cmd);
    let ping = in_ns(
        "cli",
        &["ping", "-c", "40", "-i", "0.2", "-W", "1", "198.51.100.2"],
    )
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    bed.children.push(ping);

    // Telemetry: query the socket as dpdk-telemetry.py does.
    let query = format!(
        r#"
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.connect("/var/run/dpdk/{prefix}/dpdk_telemetry.v2")
s.recv(1024)
out = {{}}
for c in sys.argv[1:]:
    s.send(c.encode())
    out.update(json.loads(s.recv(65536)))
print(json.dumps(out))
"#
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let t = loop {
        let out = run_for(
            Command::new("python3").args(["-c", &query, "/ctgate/stats", "/ctgate/ct_count"]),
            20,
        );
        assert!(out.status.success(), "{out:?}");
        let t: Value = serde_json::from_slice(&out.stdout).unwrap();
        if t["/ctgate/stats"]["ct_new"].as_u64().unwrap() >= 1 {
            break t;
        }
        assert!(Instant::now() < deadline, "no connection counted: {t}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(t["/ctgate/stats"]["rx"].as_u64().unwrap() > 0, "{t}");
    assert_eq!(t["/ctgate/stats"]["ct_capacity"], 65536, "{t}");
    assert_eq!(t["/ctgate/ct_count"]["capacity"], 65536, "{t}");
    assert!(
        t["/ctgate/ct_count"]["connections"].as_u64().unwrap() >= 1,
        "{t}"
    );

    // dpdk-dumpcap (a secondary process) captures the pings on port cli.
    let cap = dir.path("cap.pcapng");
    let out = run_for(
        Command::new("dpdk-dumpcap")
            .arg(format!("--file-prefix={prefix}"))
            .args(["-i", "net_af_packet0", "-c", "4", "-q", "-w"])
            .arg(&cap),
        60,
    );
    assert!(out.status.success(), "dpdk-dumpcap: {out:?}");
    let bytes = std::fs::read(&cap).unwrap();
    // pcapng: a section header block, then packets (4 ICMP frames > 4 * 98 bytes).
    assert_eq!(&bytes[..4], &[0x0a, 0x0d, 0x0d, 0x0a], "pcapng magic");
    assert!(bytes.len() > 4 * 98, "{} bytes", bytes.len());

    sigterm(bed.children.iter().find(|c| c.id() == pid).unwrap());
    let gate = bed.children.iter_mut().find(|c| c.id() == pid).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = gate.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "ctgate did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}

/// Reads from `s` until EOF or `secs` pass; what came, and whether EOF did.
fn read_until_eof(s: &mut TcpStream, secs: u64) -> (String, bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (String::from_utf8_lossy(&got).into_owned(), false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return (String::from_utf8_lossy(&got).into_owned(), true),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (String::from_utf8_lossy(&got).into_owned(), true)
            }
            Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
        }
    }
}

/// The REST API under abuse, with traffic forwarded throughout: a squatter
/// on its port stops ctgate at start with one line; 1000 idle connections
/// and 100 event subscribers leave it answering; slow and oversized bodies
/// get a JSON 408 / 413; an idle kept-alive connection is closed; and the
/// CLI sends its token only to the API the running ctgate wrote down.
#[test]
fn rest_api_cannot_be_exhausted_or_phished() {
    require_root();
    let _serial = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("rest-abuse");
    let mut bed = Bed::up(P);
    const API3: &str = "127.0.0.1:18184";
    let token_file = dir.path("token");
    let addr_file = dir.path("rest-addr");
    let config = format!(
        "{}\n[rest]\nbind = \"{API3}\"\ntoken_file = \"{}\"\n",
        appliance::config::TESTBED_DEFAULT
            .replace("ctgw-", &format!("{P}-"))
            .replace("eal_args = [\"--in-memory\"]", &eal_args_toml()),
        token_file.display()
    );
    std::fs::write(dir.path("ctgate.toml"), config).unwrap();
    let run = || {
        let mut c = Command::new(ctgate());
        c.args(["run", "--duration", "180", "--config"])
            .arg(dir.path("ctgate.toml"));
        c
    };

    // A process squatting on the API's port: ctgate refuses to start, in
    // one line that says what to do.
    let squatter = std::net::TcpListener::bind(API3).unwrap();
    let out = run_for(&mut run(), 60);
    assert!(!out.status.success(), "ctgate started without its API");
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("cannot listen on 127.0.0.1:18184"))
        .unwrap_or_else(|| panic!("no one-line error: {err}"));
    assert!(line.contains("enabled = false"), "{line}");
    drop(squatter);

    let (_log, pid) = start_gate(&mut bed, &mut run());
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    // The address it bound, beside the token, readable by root alone.
    let written = std::fs::read_to_string(&addr_file).unwrap();
    assert_eq!(written.trim(), format!("{API3} {pid}"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&addr_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Traffic through ctgate all along: a ping every 0.2 s.
    let mut pinger = in_ns(
        "cli",
        &["ping", "-c", "250", "-i", "0.2", "-W", "2", "198.51.100.2"],
    )
    .stdout(Stdio::piped())
    .spawn()
    .unwrap();
    let ping_out = pinger.stdout.take().unwrap();
    let pinger_pid = pinger.id();
    bed.children.push(pinger);
    let healthz = || {
        ureq::get(&format!("http://{API3}/healthz"))
            .timeout(Duration::from_secs(5))
            .call()
            .map(|r| r.status())
            .ok()
    };
    let raw = |req: &str| {
        let mut s = TcpStream::connect(API3).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        s
    };

    // 100 event subscribers: the first max_subscribers (16) are served, the
    // others get 429 with a JSON error; the API answers throughout.
    let subscribe = format!(
        "GET /api/v1/conntrack/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let mut streams = Vec::new();
    let (mut served, mut refused) = (0, 0);
    for _ in 0..100 {
        let mut s = raw(&subscribe);
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).unwrap();
        match &head {
            b"HTTP/1.1 200" => served += 1,
            b"HTTP/1.1 429" => {
                let (rest, _) = read_until_eof(&mut s, 1);
                assert!(rest.contains(r#""error":"#), "{rest}");
                refused += 1;
            }
            other => panic!("{}", String::from_utf8_lossy(other)),
        }
        streams.push(s);
    }
    assert_eq!((served, refused), (16, 84));
    assert_eq!(healthz(), Some(200));
    drop(streams);
    let refused_metric = |reason: &str| -> u64 {
        let m = ureq::get(&format!("http://{API3}/metrics"))
            .call()
            .unwrap()
            .into_string()
            .unwrap();
        let key = format!("ctgate_rest_refused_total{{reason=\"{reason}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key}in /metrics"))
    };
    assert_eq!(refused_metric("subscribers"), 84, "each 429 counted");

    // An oversized body: 413, in JSON, every time (the rest of the body is
    // read before the answer, so the close sends no reset that could beat
    // the answer to the client).
    for (i, size) in [100_000, 500_000, 100_000, 900_000]
        .iter()
        .cycle()
        .take(12)
        .enumerate()
    {
        let (s, v) = {
            let r = ureq::put(&format!("http://{API3}/api/v1/timeouts"))
                .set("Authorization", &format!("Bearer {token}"))
                .timeout(Duration::from_secs(20))
                .send_string(&format!(
                    "{{\"udp_timeout\": 30, \"pad\": \"{}\"}}",
                    "x".repeat(*size)
                ));
            match r {
                Ok(r) => (r.status(), r.into_json::<Value>().unwrap()),
                Err(ureq::Error::Status(c, r)) => (c, r.into_json::<Value>().unwrap()),
                Err(e) => panic!("oversized body {i} ({size} bytes): {e}"),
            }
        };
        assert_error(s, &v, 413, "an oversized body");
    }

    // Three kinds of clients that hold a connection, all at once (the API's
    // timers run for them together): a body that never completes (slow
    // loris), a kept-alive connection that goes idle after its request, and
    // 1000 connections that send nothing (the API's 512 connection slots
    // fill). The first gets a JSON 408 within the body timeout, the others
    // are closed, and the API answers again within the header timeout.
    let t = Instant::now();
    let mut slow = raw(&format!(
        "PUT /api/v1/timeouts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"udp_"
    ));
    let mut idle = raw("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let out = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            "--nofile=8192:8192",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let silent: Vec<TcpStream> = (0..1000)
        .map(|_| TcpStream::connect(API3).unwrap())
        .collect();
    let deadline = Instant::now() + Duration::from_secs(40);
    while healthz() != Some(200) {
        assert!(
            Instant::now() < deadline,
            "the API does not answer 40 s after 1000 idle connections"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(silent);
    assert!(
        refused_metric("connections") > 0,
        "connections beyond the 512 slots are counted"
    );
    let (answer, eof) = read_until_eof(&mut slow, 30);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains(r#""error":"#), "{answer}");
    assert!(eof, "the slow client's connection stays open: {answer}");
    let (answer, eof) = read_until_eof(&mut idle, 30);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(eof, "an idle kept-alive connection stays open");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());

    // The CLI: to the address the running ctgate wrote, with the token.
    let cli = |token_file: &std::path::Path| {
        Command::new(ctgate())
            .args(["ct", "count", "--token-file"])
            .arg(token_file)
            .env_remove("CTGATE_API")
            .env_remove("CTGATE_TOKEN")
            .output()
            .unwrap()
    };
    let ok = cli(&token_file);
    assert!(ok.status.success(), "{ok:?}");
    // Without a written address (or with one whose ctgate is gone), the CLI
    // tries the default address without the token: a squatter there gets
    // no token, and the CLI says why.
    let other = TempDir::new("rest-abuse-cli");
    std::fs::write(other.path("token"), &token).unwrap();
    let fake = std::net::TcpListener::bind(appliance::rest::DEFAULT_BIND)
        .expect("the test needs 127.0.0.1:8080 free to play the squatter");
    let catch = std::thread::spawn(move || {
        let mut got = Vec::new();
        for _ in 0..2 {
            let (mut c, _) = fake.accept().unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            let _ = c.write_all(
                b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 19\r\nConnection: close\r\n\r\n{\"error\":\"no way\"}\n",
            );
        }
        got
    });
    let guessed = cli(&other.path("token"));
    std::fs::write(other.path("rest-addr"), "127.0.0.1:8080 1\n").unwrap();
    let stale = cli(&other.path("token"));
    let requests = catch.join().unwrap();
    for (out, why) in [(&guessed, "rest-addr"), (&stale, "is not running")] {
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("the token is sent only to the API") && err.contains(why),
            "{err}"
        );
    }
    for r in &requests {
        assert!(r.starts_with("GET /api/v1/conntrack/count"), "{r}");
        assert!(
            !r.to_ascii_lowercase().contains("authorization"),
            "the token went to a squatter: {r}"
        );
        assert!(!r.contains(&token), "{r}");
    }

    // Forwarding never stopped; at stop the address file goes.
    let take = |bed: &mut Bed, pid: u32| {
        let i = bed.children.iter().position(|c| c.id() == pid).unwrap();
        bed.children.remove(i)
    };
    let mut pinger = take(&mut bed, pinger_pid);
    // SIGINT: ping stops, flushes what it printed, and summarises.
    let _ = Command::new("kill")
        .args(["-INT", &pinger_pid.to_string()])
        .status();
    let _ = pinger.wait();
    let mut text = String::new();
    let _ = BufReader::new(ping_out).read_to_string(&mut text);
    let seqs: Vec<u32> = text
        .lines()
        .filter(|l| l.contains("bytes from 198.51.100.2"))
        .filter_map(|l| l.split("icmp_seq=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    let last = seqs.iter().copied().max().unwrap_or(0);
    assert!(last >= 20, "too few pings: {text}");
    assert!(
        last as usize - seqs.len() <= 2,
        "pings lost while the API was abused ({} of {last} answered): {text}",
        seqs.len()
    );
    let mut gate = take(&mut bed, pid);
    sigterm(&gate);
    let status = gate.wait().unwrap();
    assert!(status.success(), "ctgate exit {status}");
    assert!(!addr_file.exists(), "the address file outlives ctgate");
}

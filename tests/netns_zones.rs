//! Conntrack zones from the configuration, as a user sets them up: two
//! client networks with the same addresses (192.0.2.10/24 behind ports `a`
//! and `b`, both 192.0.2.1 on ctgate's side, zones 1 and 2) reach one server
//! through masquerade at the same time, from the same source ports. Each
//! keeps its own connections (`ct list -w`), the server sees two masquerade
//! ports, and every answer goes back to the network it belongs to.
//!
//! TEST-NET addresses only, no default route anywhere, every wait bounded.

mod support;

use std::process::Command;
use std::time::Duration;

use support::hosts::{last_number, lines, wait_for, Programs};
use support::netns::{Gate, Net};
use support::*;

const TOKEN: &str = "zones-test-token-0123456789";
const API: &str = "127.0.0.1:18321";

fn config(net: &Net) -> String {
    format!(
        r#"workers = [1]
{eal}
mempool_mbufs = 4095

[[port]]
name = "a"
devargs = "net_af_packet0,iface={a}"
ipv4 = "192.0.2.1/24"
zone = 1

[[port]]
name = "b"
devargs = "net_af_packet1,iface={b}"
ipv4 = "192.0.2.1/24"
zone = 2

[[port]]
name = "srv"
devargs = "net_af_packet2,iface={srv}"
ipv4 = "198.51.100.1/24"

[conntrack]
max_connections = 4096
policy_default = "drop"

[[policy]]
name = "established"
states = "established,related"
action = "accept"

[[policy]]
name = "new-from-a"
in_port = "a"
states = "new"
action = "accept"

[[policy]]
name = "new-from-b"
in_port = "b"
states = "new"
action = "accept"

# Zone 2's connections take ports of their own.
[[nat]]
name = "zone-2"
out_port = "srv"
zone = 2
action = "masquerade to :50000-50999"

[[nat]]
name = "masquerade"
out_port = "srv"
action = "masquerade"

[rest]
bind = "{API}"
token = "{TOKEN}"
"#,
        eal = eal_args_toml(),
        a = net.gw_if("a"),
        b = net.gw_if("b"),
        srv = net.gw_if("srv"),
    )
}

/// `ctgate ct list` with `args`, its lines.
fn ct_list(args: &[&str]) -> Vec<String> {
    let out = run_for(
        Command::new(ctgate())
            .args([
                "ct",
                "--api",
                &format!("http://{API}"),
                "--token",
                TOKEN,
                "list",
            ])
            .args(args),
        30,
    );
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn two_zones_with_the_same_addresses_through_one_masquerade() {
    require_root();
    let _one = APPLIANCE.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("zones");
    let mut net = Net::new("ctzn");
    let to_srv = [("198.51.100.0/24", "192.0.2.1")];
    net.host("a", &["192.0.2.10/24"], &to_srv);
    net.host("b", &["192.0.2.10/24"], &to_srv);
    net.host("srv", &["198.51.100.2/24"], &[]);
    let gate = Gate::start(&dir.0, &config(&net));

    let mut progs = Programs::default();
    let (dl_srv, udp_srv) = (dir.path("download-server"), dir.path("udp-server"));
    progs.start(
        &net.ns("srv"),
        &dl_srv,
        &["download-server", "198.51.100.2", "8080", "60"],
    );
    progs.start(
        &net.ns("srv"),
        &udp_srv,
        &["udp-server", "198.51.100.2", "5353", "60"],
    );
    assert!(wait_for(20, || lines(&dl_srv)
        .contains(&"listening".into())
        && lines(&udp_srv).contains(&"listening".into())));
    // The same source ports in both networks, at the same time.
    let mut logs = vec![];
    for host in ["a", "b"] {
        let (dl, udp) = (
            dir.path(&format!("dl-{host}")),
            dir.path(&format!("udp-{host}")),
        );
        progs.start(
            &net.ns(host),
            &dl,
            &[
                "download-client",
                "192.0.2.10",
                "33000",
                "198.51.100.2",
                "8080",
                "60",
            ],
        );
        progs.start(
            &net.ns(host),
            &udp,
            &[
                "udp-client",
                "192.0.2.10",
                "5000",
                "198.51.100.2",
                "5353",
                "60",
            ],
        );
        logs.push((host, dl, udp));
    }
    let flowing = wait_for(20, || {
        logs.iter().all(|(_, dl, udp)| {
            last_number(dl, "bytes ") > 500_000 && last_number(udp, "udp sent ") > 50
        })
    });
    for (host, dl, udp) in &logs {
        assert!(
            flowing,
            "{host}: download {} bytes, UDP {:?}",
            last_number(dl, "bytes "),
            lines(udp).last()
        );
        let errors: Vec<String> = lines(dl)
            .into_iter()
            .filter(|l| l.starts_with("error"))
            .collect();
        assert!(errors.is_empty(), "{host}: {errors:?}");
    }

    // Each zone's table holds its own two connections, the same tuples.
    for zone in ["1", "2"] {
        let table = ct_list(&["-w", zone]);
        assert_eq!(table.len(), 2, "zone {zone}:\n{}", table.join("\n"));
        assert!(
            table
                .iter()
                .any(|l| l.contains("src=192.0.2.10 dst=198.51.100.2 sport=33000 dport=8080")),
            "zone {zone}: {table:?}"
        );
        assert!(
            table
                .iter()
                .any(|l| l.contains("src=192.0.2.10 dst=198.51.100.2 sport=5000 dport=5353")),
            "zone {zone}: {table:?}"
        );
        assert!(
            table.iter().all(|l| l.contains(&format!(" zone={zone} "))),
            "{table:?}"
        );
    }
    // The NAT rule for zone 2 applied to zone 2 only: its reply ports.
    for zone in ["1", "2"] {
        for l in ct_list(&["-w", zone]) {
            let port: u16 = l
                .rsplit(" dport=")
                .next()
                .and_then(|p| p.split_whitespace().next())
                .and_then(|p| p.parse().ok())
                .unwrap();
            assert_eq!(
                (50000..=50999).contains(&port),
                zone == "2",
                "zone {zone}: {l}"
            );
        }
    }
    // The server saw two masquerade ports for each service.
    let accepted: Vec<String> = lines(&dl_srv)
        .into_iter()
        .filter(|l| l.starts_with("accepted"))
        .collect();
    let sources: Vec<String> = lines(&udp_srv)
        .into_iter()
        .filter(|l| l.starts_with("from"))
        .collect();
    for seen in [&accepted, &sources] {
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen.iter().all(|l| l.contains(" 198.51.100.1 ")),
            "{seen:?}"
        );
        assert_ne!(seen[0], seen[1]);
    }
    // Answers went back to the network they belong to: each client's
    // download goes on and its UDP answers match what it sent.
    let before: Vec<u64> = logs
        .iter()
        .map(|(_, dl, _)| last_number(dl, "bytes "))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    for ((host, dl, udp), b) in logs.iter().zip(before) {
        assert!(
            last_number(dl, "bytes ") > b + 200_000,
            "{host}: download stalled"
        );
        let (sent, answered) = (last_number(udp, "udp sent "), last_number(udp, "answered "));
        assert!(
            answered + 20 >= sent,
            "{host}: {sent} sent, {answered} answered"
        );
    }
    drop(progs);
    let stopped = gate.stop();
    stopped.assert_balanced();
    println!(
        "zones: server saw TCP {accepted:?} UDP {sources:?}; final drops {}",
        stopped.stats["totals"]["drops"]
    );
}

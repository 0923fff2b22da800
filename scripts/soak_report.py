#!/usr/bin/env python3
"""The measuring half of scripts/soak.sh:

  sample  --metrics URL --pid PID            one sample as JSON (the idle baseline)
  watch   --start FILE ...                   a sample every --interval s while the
                                             traffic runs (checked as it goes), then
                                             every 2 s until every figure is back
                                             at its baseline or --settle s passed;
                                             the CSV and a result file
  final   --result FILE --stats-json FILE    ctgate's final accounting; prints the
                                             start / peak / end table and the
                                             verdict (exit 1 on failure)
  plot    CSV PNG                            the figures over time (matplotlib)

A figure missing from /metrics (an older ctgate) is sampled as empty and not
judged."""
import argparse
import csv
import http.client
import json
import os
import sys
import time
import urllib.parse

# Figures that must come back to their idle (pre-traffic) value once the
# traffic stopped and the timeouts passed.
BACK_TO_START = ["connections", "nat_ports", "eim_mappings", "rest_connections",
                 "event_subscribers", "mbufs_in_use"]
# RSS: its floor (the lowest sample) in a window after the warm-up is the
# reference; the floor of the traffic's last window and the value at the end
# may exceed it by the larger of these. Floors, because a sample that lands
# while the API builds a listing is up to 25 MiB above the others, and even
# the floor moves by a few MiB with what the allocator keeps (3-minute runs:
# up to 6 MiB). The window: a quarter of the traffic, between 1 and 10 minutes.
RSS_MARGIN_PCT = 10.0
RSS_MARGIN_KIB = 8192
# A long-lived flow may go this long without an answer (a REST delete of a
# masqueraded UDP flow can cost one).
LONG_MAX_GAP_S = 5.0

COLUMNS = ["t_s", "phase", "rss_kib", "mbufs_in_use", "mbufs_capacity", "connections", "capacity",
           "nat_ports", "eim_mappings", "neighbours", "rest_connections", "event_subscribers",
           "forwarded", "dropped", "rx", "tx", "generated", "drop_conntrack", "drop_policy",
           "nat_out_of_ports", "eim_full", "early_drop", "insert_failed", "long_answers", "short_ok",
           "short_fail", "rest_requests", "rest_errors"]

# The figures of the table: column, label, unit divisor.
TABLE = [("rss_kib", "RSS (MiB)", 1024.0), ("mbufs_in_use", "mbufs in use", 1),
         ("connections", "conntrack connections", 1), ("nat_ports", "NAT ports in use", 1),
         ("eim_mappings", "EIM mappings", 1), ("neighbours", "neighbour entries", 1),
         ("rest_connections", "REST connections", 1), ("event_subscribers", "event streams", 1)]


def scrape(url):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        c.request("GET", u.path)
        r = c.getresponse()
        body = r.read().decode()
        if r.status != 200:
            raise RuntimeError("GET %s: %d" % (url, r.status))
    finally:
        c.close()
    m = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        name, _, labels = name_labels.partition("{")
        m.setdefault(name, []).append((labels.rstrip("}"), float(value)))
    return m


def total(m, name, label=None):
    """The sum of a metric over its labels (those containing `label`); None if absent."""
    if name not in m:
        return None
    return int(sum(v for lab, v in m[name] if label is None or label in lab))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def sample(metrics, pid, clients=None, rest=None):
    m = scrape(metrics)
    s = {
        "rss_kib": rss_kib(pid),
        "mbufs_in_use": total(m, "ctgate_mempool_mbufs_in_use"),
        "mbufs_capacity": total(m, "ctgate_mempool_capacity_mbufs"),
        "connections": total(m, "ctgate_conntrack_connections"),
        "capacity": total(m, "ctgate_conntrack_capacity_connections"),
        "nat_ports": total(m, "ctgate_nat_ports_in_use"),
        "eim_mappings": total(m, "ctgate_nat_eim_mappings"),
        "neighbours": total(m, "ctgate_neighbour_entries"),
        "rest_connections": total(m, "ctgate_rest_connections"),
        "event_subscribers": total(m, "ctgate_conntrack_event_subscribers"),
        "forwarded": total(m, "ctgate_forwarded_packets_total"),
        "dropped": total(m, "ctgate_dropped_packets_total"),
        "rx": total(m, "ctgate_rx_packets_total"),
        "tx": total(m, "ctgate_tx_packets_total"),
        "generated": total(m, "ctgate_generated_packets_total"),
        "drop_conntrack": total(m, "ctgate_dropped_packets_total", 'reason="conntrack"'),
        "drop_policy": total(m, "ctgate_dropped_packets_total", 'reason="policy"'),
        "nat_out_of_ports": total(m, "ctgate_nat_out_of_ports_total"),
        "eim_full": total(m, "ctgate_nat_eim_full_total"),
        "early_drop": total(m, "ctgate_conntrack_early_drop_total"),
        "insert_failed": total(m, "ctgate_conntrack_insert_failed_total"),
    }
    c = read_json(clients) if clients else None
    if c:
        s["long_answers"] = sum(f["answers"] for f in c["long"].values())
        s["short_ok"] = c["short"]["tcp_ok"] + c["short"]["udp_ok"]
        s["short_fail"] = c["short"]["tcp_fail"] + c["short"]["udp_fail"]
        s["_clients"] = c
    r = read_json(rest) if rest else None
    if r:
        s["rest_requests"] = sum(r.get(k, 0) for k in ("cli_list", "get_list", "get_count", "delete", "streams_opened"))
        s["rest_errors"] = r.get("errors", 0)
        s["_rest"] = r
    return s


def cmd_sample(a):
    json.dump(sample(a.metrics, a.pid), sys.stdout)
    print()
    return 0


def settled(s, start):
    """The figures not yet back at their baseline."""
    out = []
    for k in BACK_TO_START:
        if start.get(k) is not None and s.get(k) is not None and s[k] > start[k]:
            out.append("%s %d (start %d)" % (k, s[k], start[k]))
    return out


def cmd_watch(a):
    start = json.load(open(a.start))
    fails = []
    rows = []
    out = open(a.csv, "w", newline="")
    w = csv.DictWriter(out, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    t0 = time.monotonic()

    def row(phase):
        s = sample(a.metrics, a.pid, a.clients_status, a.rest_status)
        s["t_s"] = round(time.monotonic() - t0, 1)
        s["phase"] = phase
        w.writerow({k: ("" if s.get(k) is None else s[k]) for k in COLUMNS})
        out.flush()
        rows.append(s)
        return s

    def say(s):
        print("soak: [%6.1fs] %-7s rss %s MiB, mbufs %s, conns %s/%s, nat ports %s, eim %s, neigh %s, rest %s, "
              "fwd +%s, drop +%s" % (
                  s["t_s"], s["phase"], fmt(s["rss_kib"], 1024.0), fmt(s["mbufs_in_use"]), fmt(s["connections"]),
                  fmt(s["capacity"]), fmt(s["nat_ports"]), fmt(s["eim_mappings"]), fmt(s["neighbours"]),
                  fmt(s["rest_connections"]), delta(rows, "forwarded"), delta(rows, "dropped")), flush=True)

    start_row = dict(start, t_s=0.0, phase="start")
    w.writerow({k: ("" if start_row.get(k) is None else start_row[k]) for k in COLUMNS})
    rows.append(start_row)
    traffic_end = None
    try:
        # Traffic: a sample every interval, each checked against the one before.
        n = 0
        while True:
            n += 1
            at = t0 + n * a.interval
            if at > t0 + a.seconds + 0.5:
                break
            time.sleep(max(0.0, at - time.monotonic()))
            phase = "warmup" if n * a.interval <= a.warmup else "traffic"
            s = row(phase)
            say(s)
            prev = rows[-2]
            if s["forwarded"] <= (prev["forwarded"] or 0):
                fails.append("forwarding stopped between %.0f s and %.0f s (forwarded %d -> %d)" % (
                    prev["t_s"], s["t_s"], prev["forwarded"] or 0, s["forwarded"]))
            pc, c = prev.get("_clients"), s.get("_clients")
            if c is None:
                fails.append("%.0f s: no status from the traffic clients (%s)" % (s["t_s"], a.clients_status))
            elif pc is not None:
                for name, f in c["long"].items():
                    if f["broken"]:
                        fails.append("%.0f s: long-lived flow %s broke: %s" % (s["t_s"], name, f["broken"]))
                    elif f["answers"] <= pc["long"].get(name, {}).get("answers", 0):
                        fails.append("long-lived flow %s got no answer between %.0f s and %.0f s" % (
                            name, prev["t_s"], s["t_s"]))
        # The traffic has stopped (its processes end at the same deadline): the
        # clients' final word, then the settle.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            c = read_json(a.clients_status)
            r = read_json(a.rest_status)
            if c and c.get("final") and r and r.get("final"):
                break
            time.sleep(0.5)
        s = row("stopped")
        say(s)
        traffic_end = s["t_s"]
        settle_deadline = time.monotonic() + a.settle
        next_row = time.monotonic() + a.interval
        while True:
            time.sleep(2)
            last = time.monotonic() >= settle_deadline
            if time.monotonic() >= next_row or last:
                s = row("settle")
                say(s)
                next_row += a.interval
            else:
                s = sample(a.metrics, a.pid)
            if last or not settled(s, start):
                break
        if rows[-1] is not s:
            s = row("settle")
            say(s)
        end = s
        for x in settled(end, start):
            fails.append("not back at its start value %.0f s after the traffic stopped: %s" % (
                end["t_s"] - traffic_end, x))
    except (OSError, RuntimeError, http.client.HTTPException) as e:
        # ctgate stopped answering (or exited): what was seen so far is the result.
        alive = os.path.exists("/proc/%d" % a.pid)
        fails.append("%.0f s: no sample (%s); ctgate %s" % (
            time.monotonic() - t0, e, "still runs" if alive else "has exited"))
        end = rows[-1]
        if traffic_end is None:
            traffic_end = end["t_s"]
    result = {"start": start, "rows": [strip(r) for r in rows], "end": strip(end), "warmup_s": a.warmup,
              "fails": fails, "settle_s": round(end["t_s"] - traffic_end, 1),
              "clients": read_json(a.clients_status), "rest": read_json(a.rest_status)}
    json.dump(result, open(a.result, "w"), indent=1)
    return 0


def strip(s):
    return {k: v for k, v in s.items() if not k.startswith("_")}


def fmt(v, div=1):
    if v is None:
        return "n/a"
    return "%.1f" % (v / div) if div != 1 else str(v)


def delta(rows, k):
    if len(rows) < 2 or rows[-1].get(k) is None or rows[-2].get(k) is None:
        return "?"
    return str(rows[-1][k] - rows[-2][k])


def cmd_final(a):
    res = json.load(open(a.result))
    fails = list(res["fails"])
    rows = res["rows"]
    start, end = res["start"], res["end"]
    traffic = [r for r in rows if r["phase"] in ("warmup", "traffic", "stopped")]
    peak = {k: max((r[k] for r in rows if r.get(k) is not None), default=None) for k, _, _ in TABLE}

    # RSS: its floors against the floor after the warm-up.
    def floor(lo, hi):
        v = [r["rss_kib"] for r in rows if r["phase"] == "traffic" and lo <= r["t_s"] <= hi]
        return min(v) if v else None
    t_end = max((r["t_s"] for r in rows if r["phase"] == "traffic"), default=0)
    window = min(max(t_end / 4.0, 60), 600)
    warm = floor(res["warmup_s"], res["warmup_s"] + window)
    late = floor(t_end - window, t_end)
    margin = max((warm or 0) * RSS_MARGIN_PCT / 100.0, RSS_MARGIN_KIB)
    if warm is not None:
        for what, v in (("in the traffic's last %.0f s" % window, late), ("at the end", end.get("rss_kib"))):
            if v is not None and v > warm + margin:
                fails.append("RSS grew: %.1f MiB after the warm-up, %.1f MiB %s (margin %.1f MiB)" % (
                    warm / 1024.0, v / 1024.0, what, margin / 1024.0))
    # Neighbours: never more than the hosts ctgate talks to, none at the end beyond that.
    if peak["neighbours"] is not None and peak["neighbours"] > a.hosts:
        fails.append("neighbour entries reached %d with %d hosts" % (peak["neighbours"], a.hosts))

    # The soak really did what it is for.
    cap = end.get("capacity") or 0
    if peak["connections"] is not None and cap and peak["connections"] < cap * 0.9 \
            and not (end.get("early_drop") or end.get("insert_failed")):
        fails.append("the table never filled: at most %d of %d connections" % (peak["connections"], cap))
    oop = (end.get("nat_out_of_ports") or 0) - (start.get("nat_out_of_ports") or 0)
    if oop <= 0:
        fails.append("no NAT exhaustion episode: nat_out_of_ports did not rise")
    if peak["eim_mappings"] is not None and peak["eim_mappings"] <= 0:
        fails.append("no endpoint-independent mapping was ever held")
    c = res.get("clients") or {}
    if not c.get("final"):
        fails.append("the traffic clients did not finish (no final status)")
    else:
        for name, f in c["long"].items():
            if f["max_gap_s"] > LONG_MAX_GAP_S:
                fails.append("long-lived flow %s went %.1f s without an answer" % (name, f["max_gap_s"]))
            if f["kind"] == "udp-eim" and f["alt_answers"] == 0:
                fails.append("long-lived flow %s never heard from port 7001 (endpoint-independent filtering)" % name)
        sh = c["short"]
        if sh["tcp_ok"] == 0 or sh["udp_ok"] == 0:
            fails.append("short-lived connections never succeeded: %s" % sh)
    r = res.get("rest") or {}
    if not r.get("final"):
        fails.append("the REST clients did not finish (no final status)")
    elif r["errors"]:
        fails.append("REST clients: %d errors, the last: %s" % (r["errors"], r["last_error"]))
    elif not (r["cli_list"] and r["get_list"] and r["delete"] and r["streams_opened"]):
        fails.append("REST clients did not do everything: %s" % r)

    # Accounting, from ctgate's final report.
    st = read_json(a.stats_json)
    acct = ""
    if st is None:
        fails.append("ctgate wrote no final report (%s)" % a.stats_json)
    else:
        t = st["totals"]
        lhs, rhs = t["rx"] + t["generated"], t["tx"] + t["dropped"]
        acct = "rx %d + generated %d = tx %d + dropped %d" % (t["rx"], t["generated"], t["tx"], t["dropped"])
        if lhs != rhs:
            fails.append("accounting does not balance: %s (%+d unaccounted)" % (acct, lhs - rhs))
            acct += " (%+d unaccounted)" % (lhs - rhs)
        if t["drops"].get("bad_header"):
            fails.append("%d packets failed the header checks (bad_header)" % t["drops"]["bad_header"])

    # The table.
    print()
    print("soak: %d samples over %.0f s of traffic, settled %.0f s after it stopped" % (
        len(rows), max((r["t_s"] for r in traffic), default=0), res["settle_s"]))
    print("  %-32s %10s %10s %10s   %s" % ("figure", "start", "peak", "end", "pass when"))
    crit = {"rss_kib": "floor of the last %.0f s (%s), end <= start + max(%g%%, %d MiB)" % (
        window, fmt(late, 1024.0), RSS_MARGIN_PCT, RSS_MARGIN_KIB // 1024),
        "neighbours": "peak <= %d (the hosts)" % a.hosts}
    for k, label, div in TABLE:
        st_v = warm if k == "rss_kib" else start.get(k)
        print("  %-32s %10s %10s %10s   %s" % (
            label + (" [floor after warm-up]" if k == "rss_kib" else ""), fmt(st_v, div), fmt(peak[k], div),
            fmt(end.get(k), div), crit.get(k, "end == start" if k in BACK_TO_START else "")
            if end.get(k) is not None else "not exported: not judged"))
    d = lambda k: (end.get(k) or 0) - (start.get(k) or 0)  # noqa: E731
    print("  forwarded %d, dropped %d (conntrack %d, policy %d), nat out of ports %d, EIM maps full %d, "
          "early_drop %d, insert_failed %d" % (
              d("forwarded"), d("dropped"), d("drop_conntrack"), d("drop_policy"), d("nat_out_of_ports"),
              d("eim_full"), d("early_drop"), d("insert_failed")))
    if c.get("short"):
        sh = c["short"]
        print("  short-lived: TCP %d ok / %d failed, UDP %d ok / %d failed; spray %d datagrams; bursts %s" % (
            sh["tcp_ok"], sh["tcp_fail"], sh["udp_ok"], sh["udp_fail"], c["spray"]["sent"],
            ", ".join("%d/%d" % (b["connected"], b["tried"]) for b in c["bursts"]) or "none"))
        gaps = ", ".join("%s %d (gap %.1f s)" % (n, f["answers"], f["max_gap_s"]) for n, f in c["long"].items())
        print("  long-lived answers: %s" % gaps)
        stalls = sorted({tuple(g) for f in c["long"].values() for g in f.get("gaps", [])})
        if stalls:
            print("  long-lived flows waited over 1 s for an answer at: %s" % ", ".join(
                "%.0f s (%.1f s)" % (t, g) for t, g in stalls[:20]))
    if r.get("final"):
        print("  REST: ct list %d, GET list %d, count %d, DELETE %d (%d connections), event streams %d (%d events), errors %d" % (
            r["cli_list"], r["get_list"], r["get_count"], r["delete"], r["deleted"], r["streams_opened"],
            r["stream_events"], r["errors"]))
    if acct:
        print("  accounting: %s" % acct)
    if fails:
        print("soak: FAILED")
        for f in fails:
            print("  - " + f)
        return 1
    print("soak: passed")
    return 0


def cmd_plot(a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = list(csv.DictReader(open(a.csv)))

    def series(k):
        return [(float(r["t_s"]), float(r[k])) for r in rows if r.get(k) not in (None, "")]

    panels = [("RSS (MiB)", [("rss_kib", 1024.0)]), ("mbufs in use", [("mbufs_in_use", 1)]),
              ("connections", [("connections", 1), ("capacity", 1)]),
              ("NAT", [("nat_ports", 1), ("eim_mappings", 1)]),
              ("neighbours / REST", [("neighbours", 1), ("rest_connections", 1), ("event_subscribers", 1)]),
              ("packets / s", [("forwarded", "rate"), ("dropped", "rate")])]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.1 * len(panels)), sharex=True)
    for ax, (title, keys) in zip(axes, panels):
        for k, div in keys:
            pts = series(k)
            if not pts:
                continue
            if div == "rate":
                pts = [(t1, (v1 - v0) / (t1 - t0)) for (t0, v0), (t1, v1) in zip(pts, pts[1:]) if t1 > t0]
            else:
                pts = [(t, v / div) for t, v in pts]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=k)
        ax.set_ylabel(title)
        ax.legend(loc="upper right", fontsize=7)
        ax.grid(alpha=0.3)
    stopped = [float(r["t_s"]) for r in rows if r["phase"] == "stopped"]
    for ax in axes:
        for t in stopped:
            ax.axvline(t, color="grey", linestyle="--", linewidth=0.8)
    axes[-1].set_xlabel("seconds (dashed: traffic stopped)")
    fig.suptitle("ctgate soak")
    fig.tight_layout()
    fig.savefig(a.png, dpi=100)
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--metrics", required=True)
    s.add_argument("--pid", type=int, required=True)
    w = sub.add_parser("watch")
    w.add_argument("--metrics", required=True)
    w.add_argument("--pid", type=int, required=True)
    w.add_argument("--start", required=True)
    w.add_argument("--seconds", type=float, required=True, help="how long the traffic runs")
    w.add_argument("--warmup", type=float, required=True)
    w.add_argument("--interval", type=float, default=10)
    w.add_argument("--settle", type=float, default=60)
    w.add_argument("--clients-status", required=True)
    w.add_argument("--rest-status", required=True)
    w.add_argument("--csv", required=True)
    w.add_argument("--result", required=True)
    f = sub.add_parser("final")
    f.add_argument("--result", required=True)
    f.add_argument("--stats-json", required=True)
    f.add_argument("--hosts", type=int, default=2)
    pl = sub.add_parser("plot")
    pl.add_argument("csv")
    pl.add_argument("png")
    a = p.parse_args()
    return {"sample": cmd_sample, "watch": cmd_watch, "final": cmd_final, "plot": cmd_plot}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""SVG plots for scripts/bench.py, in plain Python (no plotting library):
bench.svg (Mpps by contender, mode and flow count, log scale), attack.svg and
gc.svg (time series, one panel per figure)."""
import math
import os

COLORS = {"testpmd": "#777777", "ctgate": "#1f77b4", "kernel": "#d62728", "ovs": "#2ca02c"}
LABELS = {"testpmd": "testpmd macswap", "ctgate": "ctgate", "kernel": "Linux kernel", "ovs": "OVS-DPDK"}


def esc(s):
    return str(s).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg(w, h, body):
    return ('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" '
            'font-family="sans-serif" font-size="11">\n<rect width="100%%" height="100%%" fill="white"/>\n%s\n</svg>\n'
            % (w, h, w, h, "\n".join(body)))


def bars(path, title, groups, series, values):
    """groups: [label]; series: [key]; values[(group, key)] = float or None.
    Log-scale y axis in Mpps."""
    w, h, left, bottom, top = 120 + 110 * len(groups), 380, 60, 60, 40
    vals = [v for v in values.values() if v]
    if not vals:
        return
    lo = 10 ** math.floor(math.log10(min(vals)))
    hi = 10 ** math.ceil(math.log10(max(vals)))
    ph = h - bottom - top

    def y(v):
        return top + ph - ph * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))

    body = ['<text x="%d" y="20" font-size="14">%s</text>' % (left, esc(title))]
    d = lo
    while d <= hi * 1.0001:
        body.append('<line x1="%d" x2="%d" y1="%.1f" y2="%.1f" stroke="#ddd"/>' % (left, w - 10, y(d), y(d)))
        body.append('<text x="%d" y="%.1f" text-anchor="end">%g</text>' % (left - 4, y(d) + 4, d))
        d *= 10
    body.append('<text x="14" y="%d" transform="rotate(-90 14 %d)">Mpps (log)</text>' % (top + ph // 2, top + ph // 2))
    gw = (w - left - 10) / len(groups)
    bw = (gw - 16) / len(series)
    for gi, g in enumerate(groups):
        x0 = left + gi * gw + 8
        for si, s in enumerate(series):
            v = values.get((g, s))
            if not v:
                continue
            x = x0 + si * bw
            body.append('<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %.2f Mpps</title></rect>'
                        % (x, y(v), bw - 2, top + ph - y(v), COLORS[s], esc(LABELS[s]), esc(g), v))
        for k, line in enumerate(g.split("\n")):
            body.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (x0 + (gw - 16) / 2, top + ph + 14 + 12 * k, esc(line)))
    lx = left
    for s in series:
        body.append('<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d">%s</text>'
                    % (lx, h - 16, COLORS[s], lx + 14, h - 7, esc(LABELS[s])))
        lx += 130
    with open(path, "w") as f:
        f.write(svg(w, h, body))


def panels(path, title, xs, series, xlabel="seconds"):
    """series: [(name, [y])]: one panel each, stacked, sharing the x axis."""
    if not xs:
        return
    pw, phh, left, top = 640, 110, 80, 36
    h = top + len(series) * (phh + 24) + 30
    w = left + pw + 20
    body = ['<text x="%d" y="20" font-size="14">%s</text>' % (left, esc(title))]
    x_lo, x_hi = min(xs), max(xs)
    span = (x_hi - x_lo) or 1
    for i, (name, ys) in enumerate(series):
        y0 = top + i * (phh + 24)
        ok = [v for v in ys if v is not None]
        y_hi = max(ok) if ok else 1
        y_hi = y_hi * 1.05 if y_hi > 0 else 1
        body.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#aaa"/>' % (left, y0, pw, phh))
        body.append('<text x="%d" y="%d">%s</text>' % (left + 4, y0 + 12, esc(name)))
        body.append('<text x="%d" y="%d" text-anchor="end">%s</text>' % (left - 4, y0 + 10, "%.3g" % y_hi))
        body.append('<text x="%d" y="%d" text-anchor="end">0</text>' % (left - 4, y0 + phh))
        pts = []
        for x, v in zip(xs, ys):
            if v is None:
                continue
            pts.append("%.1f,%.1f" % (left + pw * (x - x_lo) / span, y0 + phh - phh * v / y_hi))
        body.append('<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="%s"/>' % " ".join(pts))
    yb = top + len(series) * (phh + 24) - 8
    body.append('<text x="%d" y="%d">%.1f</text><text x="%d" y="%d" text-anchor="end">%.1f %s</text>'
                % (left, yb, x_lo, left + pw, yb, x_hi, xlabel))
    with open(path, "w") as f:
        f.write(svg(w, h, body))


def rates(samples, key):
    out = [None]
    for a, b in zip(samples, samples[1:]):
        dt = b["t"] - a["t"]
        out.append((b[key] - a[key]) / dt if dt > 0 else None)
    return out


def plots(args, res, modes, human):
    labels = {"routing": "routing", "conntrack": "conntrack", "snat": "ct+SNAT"}
    groups, values = [], {}
    for n in args.sizes:
        for m in modes:
            g = "%s\n%s" % (labels[m], human(n))
            groups.append(g)
            for who in ("testpmd", "ctgate", "kernel", "ovs"):
                r = res["cells"].get((who, "routing" if who == "testpmd" else m, n))
                if r and r.get("mpps"):
                    values[(g, who)] = r["mpps"]
    bars(os.path.join(args.out, "bench.svg"), "64-byte frames, one core: Mpps (testpmd: macswap, same source)",
         groups, ["testpmd", "ctgate", "kernel", "ovs"], values)
    at = res.get("attack")
    if at and at.get("samples"):
        s = at["samples"]
        xs = [x["t"] for x in s]
        panels(os.path.join(args.out, "attack.svg"),
               "Table of %s under a flood of new flows" % human(at["capacity"]), xs, [
                   ("connections in the table", [x["connections"] for x in s]),
                   ("new connections inserted / s", rates(s, "insert")),
                   ("early_drop / s", rates(s, "early_drop")),
                   ("insert_failed / s", rates(s, "insert_failed")),
                   ("packets dropped / s (all reasons)", rates(s, "dropped")),
                   ("packets forwarded / s", [x.get("pps") for x in s]),
               ])
    g = res.get("gc")
    if g and g.get("samples"):
        s = g["samples"]
        xs = [x["t"] for x in s]
        panels(os.path.join(args.out, "gc.svg"), "GC: %s connections expiring (udp_timeout 10 s)" % human(g["connections"]), xs, [
            ("connections in the table", [x["connections"] for x in s]),
            ("expired / s", rates(s, "expired")),
            ("burst cycles p50", [x["p50"] for x in s]),
            ("burst cycles p99", [x["p99"] for x in s]),
            ("burst cycles max", [x["max"] for x in s]),
        ])

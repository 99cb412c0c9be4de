#!/usr/bin/env python3
"""Draws the faithful-vs-eager diff latency chart (SVG, no dependencies) from the JSON that
`phxsim bench-latency --json FILE` writes: p50 and p99 against broadcast_period, one line per
profile, for one cluster size, one network latency range and one loss rate.

    python3 benches/plot_latency.py results.json --nodes 3 --latency 1-5 --loss 0 > benches/plots/latency.svg
"""
import argparse
import json
import math
import sys

ap = argparse.ArgumentParser()
ap.add_argument("results")
ap.add_argument("--nodes", type=int, default=3)
ap.add_argument("--latency", default="1-5")
ap.add_argument("--loss", type=float, default=0.0)
args = ap.parse_args()
lo, hi = (int(x) for x in args.latency.split("-"))
rows = [r for r in json.load(open(args.results))
        if r["nodes"] == args.nodes and r["latency_ms"] == [lo, hi]
        and r.get("loss", 0.0) == args.loss]
if not rows:
    sys.exit(f"no rows for {args.nodes} nodes, latency {args.latency} and loss {args.loss}")
periods = sorted({r["broadcast_period_ms"] for r in rows})
W, H, L, B, T, R = 640, 400, 70, 50, 40, 150
ymax = max(r["p99_ms"] for r in rows) * 1.1
def x(bp):  # log scale over the periods
    a, b = math.log(periods[0]), math.log(periods[-1])
    return L + (math.log(bp) - a) / ((b - a) or 1) * (W - L - R)
def y(ms):
    return H - B - ms / ymax * (H - B - T)
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<text x="{L}" y="20" font-size="14">Cross-node diff latency, {args.nodes} nodes, one-way network {lo}–{hi} ms, loss {args.loss * 100:g} % (simulated)</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="{(L+W-R)/2}" y="{H-10}" text-anchor="middle">broadcast_period (ms, log scale)</text>',
       f'<text x="15" y="{(T+H-B)/2}" transform="rotate(-90 15 {(T+H-B)/2})" text-anchor="middle">latency (ms)</text>']
for bp in periods:
    out.append(f'<text x="{x(bp)}" y="{H-B+16}" text-anchor="middle">{bp}</text>')
for i in range(6):
    v = ymax * i / 5
    out.append(f'<text x="{L-6}" y="{y(v)+4}" text-anchor="end">{v:.0f}</text>')
    out.append(f'<line x1="{L}" y1="{y(v)}" x2="{W-R}" y2="{y(v)}" stroke="#ddd"/>')
styles = {("faithful", "p99_ms"): ("#c0392b", ""), ("faithful", "p50_ms"): ("#c0392b", "4 3"),
          ("eager", "p99_ms"): ("#2471a3", ""), ("eager", "p50_ms"): ("#2471a3", "4 3")}
legend_y = T + 10
for (profile, stat), (color, dash) in styles.items():
    pts = sorted((r["broadcast_period_ms"], r[stat]) for r in rows if r["profile"] == profile)
    if not pts:
        continue
    path = " ".join(f"{x(bp):.1f},{y(v):.1f}" for bp, v in pts)
    out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
    for bp, v in pts:
        out.append(f'<circle cx="{x(bp):.1f}" cy="{y(v):.1f}" r="3" fill="{color}"/>')
    out.append(f'<line x1="{W-R+10}" y1="{legend_y}" x2="{W-R+35}" y2="{legend_y}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
    out.append(f'<text x="{W-R+40}" y="{legend_y+4}">{profile} {stat[:3]}</text>')
    legend_y += 18
out.append("</svg>")
print("\n".join(out))

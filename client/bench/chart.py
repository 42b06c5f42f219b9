"""Draws the quorumid-vs-etcd chart from quorumid-bench's JSON results.

usage: chart.py RESULTS.json OUT.png
One panel per operation: throughput against concurrent clients, both systems, log scale.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

results = json.load(open(sys.argv[1]))
points = results["points"]
ops = list(dict.fromkeys(p["op"] for p in points))
etcd_name = {"status": "put", "enroll": "put", "bounded": "serializable get",
             "linearizable": "linearizable get", "local": "serializable get"}
fig, axes = plt.subplots(1, len(ops), figsize=(4 * len(ops), 3.6), squeeze=False)
for ax, op in zip(axes[0], ops):
    for system, style in (("quorumid", "o-"), ("etcd", "s--")):
        series = sorted((p["clients"], p["throughput"]) for p in points
                        if p["op"] == op and p["system"] == system)
        if series:
            ax.plot([c for c, _ in series], [t for _, t in series], style, label=system)
    ax.set_xscale("log")
    ax.set_title(f"{op} (etcd: {etcd_name.get(op, '?')})", fontsize=9)
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("ops/s")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
machine = results["machine"]
fig.suptitle(f"quorumid vs etcd 3.4, 3 nodes on loopback, fsync on; {machine['cores']} cores, "
             f"fsync p50 {machine['fsync_p50_ms']:.2f} ms", fontsize=10)
fig.tight_layout()
fig.savefig(sys.argv[2], dpi=110)
print(f"chart written to {sys.argv[2]}")

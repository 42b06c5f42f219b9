//! The results: JSON for the chart (`client/bench/chart.py`), markdown for BENCHMARKS.md.

use std::fmt::Write as _;

use serde::Serialize;

use crate::failover::Failover;
use crate::load::Measurement;
use crate::machine::Machine;

#[derive(Debug, Serialize)]
pub struct Results {
    pub machine: Machine,
    /// quorumid's Raft timings in this run.
    pub raft: String,
    pub points: Vec<Measurement>,
    pub failover: Vec<Failover>,
}

impl Results {
    pub fn new(machine: Machine) -> Results {
        Results {
            machine,
            raft: String::new(),
            points: Vec::new(),
            failover: Vec::new(),
        }
    }

    fn find(&self, system: &str, m: &Measurement) -> Option<&Measurement> {
        self.points
            .iter()
            .find(|p| p.system == system && p.op == m.op && p.clients == m.clients)
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "Machine: {}.\n", self.machine);
        let _ = writeln!(out, "quorumid Raft timings: {}.\n", self.raft);
        let _ = writeln!(
            out,
            "| op (etcd's) | clients | quorumid ops/s | p50 / p99 / p999 ms | etcd ops/s | p50 / p99 / p999 ms | quorumid / etcd |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for q in self.points.iter().filter(|p| p.system == "quorumid") {
            let Some(e) = self.find("etcd", q) else {
                continue;
            };
            let latency =
                |m: &Measurement| format!("{:.2} / {:.2} / {:.2}", m.p50_ms, m.p99_ms, m.p999_ms);
            let errors = |m: &Measurement| {
                if m.errors > 0 {
                    format!(" ({} errors)", m.errors)
                } else {
                    String::new()
                }
            };
            let _ = writeln!(
                out,
                "| {} ({}) | {} | {:.0}{} | {} | {:.0}{} | {} | {:.2}× |",
                q.op,
                q.op.etcd_equivalent(),
                q.clients,
                q.throughput,
                errors(q),
                latency(q),
                e.throughput,
                errors(e),
                latency(e),
                q.throughput / e.throughput
            );
        }
        if !self.failover.is_empty() {
            let _ = writeln!(
                out,
                "\n| leader kill -9 to first acknowledged write | runs | median ms | max ms |"
            );
            let _ = writeln!(out, "|---|---|---|---|");
            for f in &self.failover {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.0} | {:.0} |",
                    f.system,
                    f.runs_ms.len(),
                    f.median_ms,
                    f.max_ms
                );
            }
        }
        out
    }
}

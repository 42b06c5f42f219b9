//! Network partitions in Jepsen's shapes, as a [`Grudge`]: for each node, the nodes whose
//! packets it drops. Applied with iptables inside each node's network namespace from the host
//! (`nsenter -t PID -n iptables ...`; nothing is needed in the image), healed by flushing the
//! chain. Only traffic between nodes is dropped: the harness's clients reach every node
//! through its published port (from the bridge's gateway), as Jepsen's clients do.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context as _, bail};
use tokio::process::Command;

use crate::cluster::Cluster;

/// node -> the nodes whose packets it drops.
pub type Grudge = BTreeMap<u64, BTreeSet<u64>>;

/// Nodes in different groups drop each other's packets (both ways).
pub fn split(groups: &[Vec<u64>]) -> Grudge {
    let mut grudge = Grudge::new();
    for (i, group) in groups.iter().enumerate() {
        for node in group {
            let others = groups
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(_, g)| g.iter().copied());
            grudge.entry(*node).or_default().extend(others);
        }
    }
    grudge
}

/// One node cut off from all others.
pub fn isolate(node: u64, all: &[u64]) -> Grudge {
    let rest: Vec<u64> = all.iter().copied().filter(|&n| n != node).collect();
    split(&[vec![node], rest])
}

/// A minority (the first `len / 2` of `order`) and a majority.
pub fn halves(order: &[u64]) -> Grudge {
    let (minority, majority) = order.split_at(order.len() / 2);
    split(&[minority.to_vec(), majority.to_vec()])
}

/// Two halves that cannot talk, and one node (the middle of `order`) that talks to both.
pub fn bridge(order: &[u64]) -> Grudge {
    let middle = order.len() / 2;
    let (left, right) = (&order[..middle], &order[middle + 1..]);
    let mut grudge = split(&[left.to_vec(), right.to_vec()]);
    grudge.entry(order[middle]).or_default();
    grudge
}

/// Every node hears from a majority (itself and the next `len / 2` nodes around the ring of
/// `order`), and no two nodes hear from the same majority.
pub fn majorities_ring(order: &[u64]) -> Grudge {
    let n = order.len();
    let mut grudge = Grudge::new();
    for (i, node) in order.iter().enumerate() {
        let heard: BTreeSet<u64> = (0..=n / 2).map(|k| order[(i + k) % n]).collect();
        let dropped = order.iter().copied().filter(|m| !heard.contains(m));
        grudge.entry(*node).or_default().extend(dropped);
    }
    grudge
}

/// `to` drops every packet from `from`; the other way still works.
pub fn one_way(from: u64, to: u64) -> Grudge {
    Grudge::from([(to, BTreeSet::from([from]))])
}

/// A short description, e.g. `1 drops [2, 3]; 2 drops [1]`.
pub fn describe(grudge: &Grudge) -> String {
    grudge
        .iter()
        .filter(|(_, d)| !d.is_empty())
        .map(|(n, d)| format!("{n} drops {:?}", d.iter().collect::<Vec<_>>()))
        .collect::<Vec<_>>()
        .join("; ")
}

async fn iptables(pid: i64, args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("nsenter")
        .arg("-t")
        .arg(pid.to_string())
        .arg("-n")
        .arg("iptables")
        .arg("-w")
        .args(args)
        .output()
        .await
        .context(
            "running nsenter (util-linux) and iptables: are they installed, and are we root?",
        )?;
    if !output.status.success() {
        bail!(
            "nsenter -t {pid} -n iptables {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Adds the grudge's rules. Nodes that are not running are skipped (a restarted container
/// has a fresh namespace: the nemesis applies partitions again after restarts).
pub async fn apply(cluster: &Cluster, grudge: &Grudge) -> anyhow::Result<()> {
    let mut ips = BTreeMap::new();
    for id in cluster.ids() {
        if let Some(ip) = cluster.facts(id).await?.ip {
            ips.insert(id, ip);
        }
    }
    for (node, dropped) in grudge {
        let facts = cluster.facts(*node).await?;
        if !facts.running || facts.pid == 0 {
            continue;
        }
        for from in dropped {
            let Some(ip) = ips.get(from) else { continue };
            iptables(facts.pid, &["-A", "INPUT", "-s", ip, "-j", "DROP"]).await?;
        }
    }
    Ok(())
}

/// Removes every rule from every running node.
pub async fn heal(cluster: &Cluster) -> anyhow::Result<()> {
    for id in cluster.ids() {
        let facts = cluster.facts(id).await?;
        if facts.running && facts.pid != 0 {
            iptables(facts.pid, &["-F", "INPUT"]).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drops(grudge: &Grudge, node: u64) -> Vec<u64> {
        grudge
            .get(&node)
            .map(|d| d.iter().copied().collect())
            .unwrap_or_default()
    }

    #[test]
    fn shapes() {
        let all = [1, 2, 3, 4, 5];
        let g = isolate(3, &all);
        assert_eq!(drops(&g, 3), [1, 2, 4, 5]);
        assert_eq!(drops(&g, 1), [3]);

        let g = halves(&[4, 1, 2, 3, 5]);
        assert_eq!(drops(&g, 4), [2, 3, 5]);
        assert_eq!(drops(&g, 1), [2, 3, 5]);
        assert_eq!(drops(&g, 2), [1, 4]);

        let g = bridge(&all);
        assert_eq!(drops(&g, 3), Vec::<u64>::new());
        assert_eq!(drops(&g, 1), [4, 5]);
        assert_eq!(drops(&g, 5), [1, 2]);

        let g = majorities_ring(&all);
        for node in all {
            assert_eq!(
                drops(&g, node).len(),
                2,
                "{node} hears from a majority of 3"
            );
        }
        let heard: BTreeSet<Vec<u64>> = all
            .iter()
            .map(|n| all.iter().copied().filter(|m| !g[n].contains(m)).collect())
            .collect();
        assert_eq!(heard.len(), 5, "no two nodes hear from the same majority");

        assert_eq!(drops(&one_way(1, 2), 2), [1]);
        assert_eq!(drops(&one_way(1, 2), 1), Vec::<u64>::new());
    }
}

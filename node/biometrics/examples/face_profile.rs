//! Where face extraction's time goes inside the networks: tract's per-node timings for YuNet
//! (on the first ORL image, prepared by the data's recipe) and SFace (on its aligned crop),
//! summed by operator over many runs, one thread. Times are the thread's CPU time (a run
//! that loses the processor to another is not charged for the wait), still relative figures:
//! compare two builds in the same minute, not against another day's milliseconds.
//!
//! `cargo run -p quorumid-biometrics --profile ci --example face_profile [MODELS_DIR] [RUNS] [TOP]`

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use quorumid_biometrics::extract::decode::decode;
use quorumid_biometrics::extract::prepare::orl_recipe;
use quorumid_biometrics::extract::{FaceExtractor, Limits, default_models_dir};
use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::SimpleState;

/// This thread's CPU time.
fn cpu_time() -> Duration {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(PathBuf::from)
        .or_else(default_models_dir)
        .ok_or("no models directory")?;
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(50);
    let top: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(15);
    let extractor = FaceExtractor::load(&dir)?;
    let bytes = std::fs::read(dir.join("orl/s1/1.pgm"))?;
    let image = orl_recipe(&decode(&bytes, &Limits::default())?).ok_or("recipe")?;
    let plans = extractor.plans_for_profiling(&image)?;
    for (name, (plan, blob)) in ["YuNet", "SFace"].iter().zip(plans) {
        let model = plan.model();
        let mut per_node: HashMap<usize, Duration> = HashMap::new();
        let mut state = SimpleState::new(&plan)?;
        let mut whole = Duration::ZERO;
        for run in 0..=runs {
            let started = cpu_time();
            let mut times: Vec<(usize, Duration)> = Vec::new();
            state.run_plan_with_eval(
                tvec!(blob.clone().into_tvalue()),
                |ctx, st, node, input| {
                    let t = cpu_time();
                    let out = tract_onnx::tract_core::plan::eval(ctx, st, node, input);
                    times.push((node.id, cpu_time() - t));
                    out
                },
            )?;
            // The first run warms caches and allocations: not counted.
            if run > 0 {
                whole += cpu_time() - started;
                for (id, t) in times {
                    *per_node.entry(id).or_default() += t;
                }
            }
        }
        let per_run = |d: Duration| d.as_secs_f64() * 1e3 / runs as f64;
        let mut by_op: HashMap<String, (Duration, usize)> = HashMap::new();
        for (&id, &t) in &per_node {
            let e = by_op
                .entry(model.node(id).op().name().to_string())
                .or_default();
            e.0 += t;
            e.1 += 1;
        }
        let mut by_op: Vec<_> = by_op.into_iter().collect();
        by_op.sort_by_key(|e| std::cmp::Reverse(e.1.0));
        println!(
            "== {name}: {:.3} ms of CPU a run ({runs} runs)",
            per_run(whole)
        );
        println!("   by operator (ms a run, nodes):");
        for (op, (t, n)) in &by_op {
            println!("   {:>8.3}  {n:>4}  {op}", per_run(*t));
        }
        let mut nodes: Vec<_> = per_node.into_iter().collect();
        nodes.sort_by_key(|e| std::cmp::Reverse(e.1));
        println!("   slowest nodes:");
        for (id, t) in nodes.into_iter().take(top) {
            let node = model.node(id);
            let shape = model
                .outlet_fact(OutletId::new(id, 0))
                .map(|f| format!("{:?}", f.shape))
                .unwrap_or_default();
            println!(
                "   {:>8.3}  #{id} {} {} -> {shape} {}",
                per_run(t),
                node.op().name(),
                node.name,
                node.op().info().unwrap_or_default().join("; ")
            );
        }
    }
    Ok(())
}

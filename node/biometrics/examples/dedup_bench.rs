//! 1:N de-dup at scale: a synthetic gallery fitted to ORL, the exact gallery (plain scan and
//! int4 pre-filter, on 1 and more threads) and the HNSW gallery (build time, memory,
//! latency, recall), and the vectors written out for the FAISS side
//! (`bench/dedup_vs_faiss.sh` runs both).
//!
//! `cargo run -p quorumid-biometrics --release --no-default-features --example dedup_bench --
//! [--n 1000000] [--queries 1000] [--m 16] [--ef-construction 100] [--ef 16,32,64,128]
//! [--threshold 0.438] [--strict 0.6] [--threads 1,2] [--seed 42] [--out DIR] [--graph FILE]
//! [--no-graph true]`
//!
//! With `--graph FILE`, the HNSW gallery is read from `FILE` if it exists (what a node
//! restoring a persisted graph does) and otherwise built and written there; `--no-graph
//! true` measures the exact gallery only.
//!
//! Writes to `DIR` (default `$HOME/.cache/quorumid-dedup`): `gallery.fvecs` (template `i`
//! has key `i`), `queries.fvecs` (duplicates first: fresh samples of enrolled identities,
//! then as many newcomers), `truth.ivecs` (the exact int8 top 10 of each query),
//! `exact.tsv` (one line per scan plan and search) and `rust.tsv` (one line per ef).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use quorumid_biometrics::calibration::pair_scores;
use quorumid_biometrics::face::{Embedding, FaceTemplate, ModelId};
use quorumid_biometrics::gallery::{
    Gallery, GalleryMatch, HnswGallery, HnswParams, ScanCount, ScanPlan,
};
use quorumid_biometrics::synthetic::{Rng, ScoreTargets, SyntheticFaces, quantile};

type Error = Box<dyn std::error::Error>;

struct Args {
    n: usize,
    queries: usize,
    m: usize,
    ef_construction: usize,
    ef: Vec<usize>,
    threshold: f32,
    strict: f32,
    threads: Vec<usize>,
    seed: u64,
    out: PathBuf,
    graph: Option<PathBuf>,
    no_graph: bool,
}

fn args() -> Result<Args, Error> {
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    let mut a = Args {
        n: 1_000_000,
        queries: 1_000,
        m: 16,
        ef_construction: 100,
        ef: vec![16, 32, 64, 128],
        threshold: 0.438,
        strict: 0.6,
        threads: vec![1, 2],
        seed: 42,
        out: Path::new(&home).join(".cache/quorumid-dedup"),
        graph: None,
        no_graph: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--n" => a.n = value.parse()?,
            "--queries" => a.queries = value.parse()?,
            "--m" => a.m = value.parse()?,
            "--ef-construction" => a.ef_construction = value.parse()?,
            "--ef" => a.ef = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--threshold" => a.threshold = value.parse()?,
            "--strict" => a.strict = value.parse()?,
            "--threads" => {
                a.threads = value.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            "--no-graph" => a.no_graph = value.parse()?,
            "--seed" => a.seed = value.parse()?,
            "--out" => a.out = value.into(),
            "--graph" => a.graph = Some(value.into()),
            _ => return Err(format!("unknown flag {flag}").into()),
        }
    }
    Ok(a)
}

#[derive(serde::Deserialize)]
struct Line {
    subject: u32,
    embedding: Vec<f32>,
}

fn orl_scores(model: &ModelId) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/faces/orl-sface.jsonl");
    let mut samples = Vec::new();
    for line in std::fs::read_to_string(path)?.lines() {
        let l: Line = serde_json::from_str(line)?;
        samples.push((l.subject, l.embedding));
    }
    let templates: Vec<FaceTemplate> = samples
        .iter()
        .map(|(_, v)| Embedding::new(model.clone(), v.clone()).map(|e| e.quantise()))
        .collect::<Result<_, _>>()?;
    Ok(pair_scores(&samples, &templates)?)
}

fn write_vec<T: Copy>(
    w: &mut impl Write,
    values: &[T],
    to_le: impl Fn(T) -> [u8; 4],
) -> Result<(), Error> {
    w.write_all(&(values.len() as i32).to_le_bytes())?;
    for &v in values {
        w.write_all(&to_le(v))?;
    }
    Ok(())
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// This thread's CPU time: a query's cost without the time other processes on the shared
/// machine took the core away.
fn thread_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// The process's CPU time, all threads: a split scan's cost on both cores.
fn process_cpu() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn uptime() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// One search of the exact gallery, as the bench runs it.
#[derive(Clone, Copy)]
enum ExactSearch {
    /// `search(probe, threshold)`: the node's de-dup.
    Dedup(f32),
    /// `nearest(probe, 10)`.
    Top10,
}

/// What the exact gallery answered for every query under the reference plan (plain scan,
/// one thread): what every other plan must answer, bit for bit.
struct ExactTruth {
    best: Vec<Option<GalleryMatch>>,
    top: Vec<Vec<GalleryMatch>>,
}

fn same(a: &[GalleryMatch], b: &[GalleryMatch]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.key == y.key && x.score.to_bits() == y.score.to_bits())
}

/// Runs `search` for every query under `plan`; prints and records one line.
#[allow(clippy::too_many_arguments)]
fn measure_exact(
    gallery: &mut Gallery,
    plan: ScanPlan,
    search: ExactSearch,
    queries: &[(Option<usize>, FaceTemplate)],
    truth: Option<&ExactTruth>,
    tsv: &mut impl Write,
) -> Result<ExactTruth, Error> {
    gallery.set_plan(plan);
    let mut answers = ExactTruth {
        best: Vec::new(),
        top: Vec::new(),
    };
    let (mut wall, mut cpu, mut rechecked) = (Vec::new(), Vec::new(), Vec::new());
    let mut threads = 0;
    let t_all = Instant::now();
    for (_, q) in queries {
        let (t0, c0) = (Instant::now(), process_cpu());
        let count: ScanCount = match search {
            ExactSearch::Dedup(t) => {
                let (best, count) = gallery.search_counted(q, t)?;
                answers.best.push(best);
                count
            }
            ExactSearch::Top10 => {
                let (top, count) = gallery.nearest_counted(q, 10)?;
                answers.top.push(top);
                count
            }
        };
        wall.push(t0.elapsed().as_secs_f64());
        cpu.push(process_cpu() - c0);
        rechecked.push(count.rechecked as f64);
        threads = count.threads;
    }
    let qps = queries.len() as f64 / t_all.elapsed().as_secs_f64();
    // Misses: a query whose reference answer differs (a match not found, another key, or
    // another score to the bit). With a threshold, also the queries that have a match.
    let (mut misses, mut with_match) = (0, 0);
    if let Some(truth) = truth {
        for i in 0..queries.len() {
            match search {
                ExactSearch::Dedup(_) => {
                    let (want, got) = (truth.best[i], answers.best[i]);
                    with_match += usize::from(want.is_some());
                    let equal = match (want, got) {
                        (None, None) => true,
                        (Some(w), Some(g)) => {
                            w.key == g.key && w.score.to_bits() == g.score.to_bits()
                        }
                        _ => false,
                    };
                    misses += usize::from(!equal);
                }
                ExactSearch::Top10 => {
                    with_match += 1;
                    misses += usize::from(!same(&truth.top[i], &answers.top[i]));
                }
            }
        }
    }
    let mean_rechecked = rechecked.iter().sum::<f64>() / rechecked.len() as f64;
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    rechecked.sort_by(f64::total_cmp);
    let name = match search {
        ExactSearch::Dedup(t) => format!("search >= {t}"),
        ExactSearch::Top10 => "nearest 10".to_string(),
    };
    let scan = if plan.prefilter {
        "int4 pre-filter"
    } else {
        "plain int8"
    };
    let misses = if truth.is_some() {
        format!("{misses} of {with_match}")
    } else {
        "(reference)".to_string()
    };
    println!(
        "| {scan} | {threads} | {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {qps:.0} | {misses} | {mean_rechecked:.0} / {:.0} | {} |",
        percentile_ms(&wall, 0.5),
        percentile_ms(&wall, 0.99),
        percentile_ms(&wall, 0.999),
        percentile_ms(&cpu, 0.5),
        percentile_ms(&cpu, 0.99),
        rechecked[(rechecked.len() * 99 / 100).min(rechecked.len() - 1)],
        uptime()
    );
    writeln!(
        tsv,
        "{}\t{threads}\t{name}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{qps:.0}\t{misses}\t{mean_rechecked:.0}",
        plan.prefilter,
        percentile_ms(&wall, 0.5),
        percentile_ms(&wall, 0.99),
        percentile_ms(&wall, 0.999),
        percentile_ms(&cpu, 0.5),
        percentile_ms(&cpu, 0.99),
    )?;
    Ok(answers)
}

fn percentile_ms(sorted: &[f64], q: f64) -> f64 {
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] * 1e3
}

fn main() -> Result<(), Error> {
    let a = args()?;
    let model = ModelId::new("sface-2021dec", 128)?;
    std::fs::create_dir_all(&a.out)?;

    // 1. Fit the generator to ORL and show how close it is.
    let (genuine, impostor) = orl_scores(&model)?;
    let targets = ScoreTargets::from_scores(&genuine, &impostor);
    let faces = SyntheticFaces::fit(128, targets, a.seed);
    let s = faces.scatter();
    println!(
        "fitted: shared component α = {:.4}, noise σ = {:.4}, noise spread τ = {:.4}",
        s.shared, s.noise, s.noise_spread
    );
    let mut check = Rng::new(a.seed ^ 0xc4ec);
    let (mut sg, mut si) = (Vec::new(), Vec::new());
    for _ in 0..20_000 {
        let (c, d) = (faces.identity(&mut check), faces.identity(&mut check));
        let x = Embedding::new(model.clone(), faces.sample(&c, &mut check))?.quantise();
        let y = Embedding::new(model.clone(), faces.sample(&c, &mut check))?.quantise();
        let z = Embedding::new(model.clone(), faces.sample(&d, &mut check))?.quantise();
        sg.push(f64::from(x.score(&y)?));
        si.push(f64::from(x.score(&z)?));
    }
    println!(
        "| scores (int8) | genuine p01 | p05 | median | impostor median | p99 | p99.99 | P(impostor >= {}) |",
        a.threshold
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (name, g, i) in [("ORL SFace", &genuine, &impostor), ("synthetic", &sg, &si)] {
        let above =
            i.iter().filter(|&&x| x >= f64::from(a.threshold)).count() as f64 / i.len() as f64;
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1e} |",
            quantile(g, 0.01),
            quantile(g, 0.05),
            quantile(g, 0.5),
            quantile(i, 0.5),
            quantile(i, 0.99),
            quantile(i, 0.9999),
            above
        );
    }

    // 2. The gallery and the queries, written for the FAISS side as they are made.
    let started = Instant::now();
    let mut pick = Rng::new(a.seed ^ 0x9d1c);
    let mut planted: Vec<usize> = (0..a.queries)
        .map(|_| (pick.next_u64() % a.n as u64) as usize)
        .collect();
    let order = planted.clone();
    planted.sort_unstable();
    planted.dedup();
    let mut kept_centres = std::collections::HashMap::new();
    let mut rng = Rng::new(a.seed);
    let mut gallery_file = BufWriter::new(File::create(a.out.join("gallery.fvecs"))?);
    let mut templates: Vec<FaceTemplate> = Vec::with_capacity(a.n);
    for i in 0..a.n {
        let centre = faces.identity(&mut rng);
        let e = faces.sample(&centre, &mut rng);
        write_vec(&mut gallery_file, &e, f32::to_le_bytes)?;
        templates.push(Embedding::new(model.clone(), e)?.quantise());
        if planted.binary_search(&i).is_ok() {
            kept_centres.insert(i, centre);
        }
    }
    gallery_file.flush()?;
    let mut query_rng = Rng::new(a.seed ^ 0x9e5);
    let mut queries_file = BufWriter::new(File::create(a.out.join("queries.fvecs"))?);
    let mut queries: Vec<(Option<usize>, FaceTemplate)> = Vec::new();
    for &i in &order {
        let e = faces.sample(&kept_centres[&i], &mut query_rng);
        write_vec(&mut queries_file, &e, f32::to_le_bytes)?;
        queries.push((Some(i), Embedding::new(model.clone(), e)?.quantise()));
    }
    for _ in 0..a.queries {
        let c = faces.identity(&mut query_rng);
        let e = faces.sample(&c, &mut query_rng);
        write_vec(&mut queries_file, &e, f32::to_le_bytes)?;
        queries.push((None, Embedding::new(model.clone(), e)?.quantise()));
    }
    queries_file.flush()?;
    println!(
        "generated {} templates and {} queries in {:.1} s ({})",
        a.n,
        queries.len(),
        started.elapsed().as_secs_f64(),
        a.out.display()
    );

    // 3. The exact gallery: the plain int8 scan on one thread is the reference; every
    //    other plan (threads, int4 pre-filter) must give its answers to the bit.
    let mut exact = Gallery::new(model.clone());
    for (i, t) in templates.iter().enumerate() {
        exact.insert(i as u64, t)?;
    }
    println!(
        "exact gallery: {} templates, {:.0} bytes/template counted; load average {}",
        exact.len(),
        exact.memory_bytes() as f64 / a.n as f64,
        uptime()
    );
    let mut exact_tsv = BufWriter::new(File::create(a.out.join("exact.tsv"))?);
    writeln!(
        exact_tsv,
        "prefilter\tthreads\tsearch\tp50_ms\tp99_ms\tp999_ms\tcpu_p50_ms\tcpu_p99_ms\tqps\tmisses\trechecked"
    )?;
    println!(
        "| scan | threads | search | p50 ms | p99 ms | p99.9 ms | CPU p50 ms | CPU p99 ms | qps | differing from the plain scan | rows scored exactly, mean / p99 | load average |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let searches = [
        ExactSearch::Dedup(a.threshold),
        ExactSearch::Dedup(a.strict),
        ExactSearch::Top10,
    ];
    let plain = ScanPlan {
        threads: 1,
        prefilter: false,
    };
    let mut references = Vec::new();
    for &search in &searches {
        references.push(measure_exact(
            &mut exact,
            plain,
            search,
            &queries,
            None,
            &mut exact_tsv,
        )?);
    }
    for prefilter in [false, true] {
        for &threads in &a.threads {
            let plan = ScanPlan { threads, prefilter };
            if plan == plain {
                continue;
            }
            for (&search, reference) in searches.iter().zip(&references) {
                measure_exact(
                    &mut exact,
                    plan,
                    search,
                    &queries,
                    Some(reference),
                    &mut exact_tsv,
                )?;
            }
        }
    }
    exact_tsv.flush()?;
    let truth: Vec<Vec<GalleryMatch>> = references.pop().map(|r| r.top).unwrap_or_default();
    let mut truth_file = BufWriter::new(File::create(a.out.join("truth.ivecs"))?);
    for top in &truth {
        let ids: Vec<i32> = top.iter().map(|m| m.key as i32).collect();
        write_vec(&mut truth_file, &ids, i32::to_le_bytes)?;
    }
    truth_file.flush()?;
    let above: Vec<bool> = truth
        .iter()
        .map(|t| t.first().is_some_and(|m| m.score >= a.threshold))
        .collect();
    for (t, reference) in [a.threshold, a.strict].iter().zip(&references) {
        let dup = reference.best[..a.queries]
            .iter()
            .filter(|b| b.is_some())
            .count();
        let new = reference.best[a.queries..]
            .iter()
            .filter(|b| b.is_some())
            .count();
        println!(
            "queries with a template >= {t}: {dup} of {} duplicates, {new} of {} newcomers",
            a.queries, a.queries
        );
    }
    let dup_above = queries
        .iter()
        .zip(&above)
        .filter(|((p, _), x)| p.is_some() && **x)
        .count();
    drop(exact);
    if a.no_graph {
        println!("peak RSS: {:.0} MiB", rss_bytes() as f64 / (1 << 20) as f64);
        return Ok(());
    }

    // 4. The HNSW gallery: what a node does at start (insert every template).
    let rss_before = rss_bytes();
    let params = HnswParams {
        m: a.m,
        ef_construction: a.ef_construction,
        ef_search: a.ef[0],
        seed: a.seed,
        exact_below: 0,
    };
    let existing = a.graph.as_ref().filter(|g| g.exists());
    let mut hnsw = if let Some(path) = existing {
        let t0 = Instant::now();
        let mut file = std::io::BufReader::new(File::open(path)?);
        let hnsw = HnswGallery::read_from(model.clone(), &mut file)?;
        println!(
            "HNSW gallery read from {} ({:.0} MB) in {:.1} s",
            path.display(),
            std::fs::metadata(path)?.len() as f64 / 1e6,
            t0.elapsed().as_secs_f64()
        );
        if hnsw.len() != a.n || hnsw.params().m != a.m {
            return Err("the graph file is of another gallery".into());
        }
        hnsw
    } else {
        let t0 = Instant::now();
        let mut hnsw = HnswGallery::new(model.clone(), params);
        hnsw.reserve(a.n);
        for (i, t) in templates.iter().enumerate() {
            hnsw.insert(i as u64, t)?;
            if (i + 1) % 100_000 == 0 {
                eprintln!("  built {} in {:.0} s", i + 1, t0.elapsed().as_secs_f64());
            }
        }
        let build = t0.elapsed().as_secs_f64();
        let rss_after = rss_bytes();
        println!(
            "HNSW build (M = {}, efConstruction = {}), one thread: {:.1} s ({:.0} inserts/s); \
             {:.0} bytes/template counted, RSS grew {:.0} bytes/template",
            a.m,
            a.ef_construction,
            build,
            a.n as f64 / build,
            hnsw.memory_bytes() as f64 / a.n as f64,
            rss_after.saturating_sub(rss_before) as f64 / a.n as f64
        );
        if let Some(path) = &a.graph {
            let t0 = Instant::now();
            let mut file = BufWriter::new(File::create(path)?);
            hnsw.write_to(&mut file)?;
            file.flush()?;
            println!(
                "HNSW gallery written to {} in {:.1} s",
                path.display(),
                t0.elapsed().as_secs_f64()
            );
        }
        hnsw
    };
    drop(templates);

    // 5. Queries, one thread, at each ef.
    let mut tsv = BufWriter::new(File::create(a.out.join("rust.tsv"))?);
    writeln!(
        tsv,
        "ef\trecall10\tqps10\tp50_ms\tp99_ms\tp999_ms\tdedup_qps\tmissed\tabove\tplanted_missed"
    )?;
    println!(
        "| ef | de-dup p50 ms | p99 ms | p99.9 ms | p99 CPU ms | de-dup qps | missed (of queries with a template >= {}) | planted duplicates missed | recall@10 | top-10 qps | graph + exact on a miss: p50 / p99 ms |",
        a.threshold
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    const PASSES: usize = 3;
    for &ef in &a.ef {
        hnsw.set_ef_search(ef);
        let mut lat = Vec::with_capacity(queries.len() * PASSES);
        let mut cpu = Vec::with_capacity(queries.len() * PASSES);
        let (mut missed, mut planted_missed) = (0, 0);
        let t_all = Instant::now();
        for pass in 0..PASSES {
            for (n, (p, q)) in queries.iter().enumerate() {
                let (t0, c0) = (Instant::now(), thread_cpu());
                let hit = hnsw.search(q, a.threshold)?;
                lat.push(t0.elapsed().as_secs_f64());
                cpu.push(thread_cpu() - c0);
                if pass == 0 && above[n] && hit.is_none() {
                    missed += 1;
                    planted_missed += usize::from(p.is_some());
                }
            }
        }
        let dedup_qps = lat.len() as f64 / t_all.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        cpu.sort_by(f64::total_cmp);
        let t0 = Instant::now();
        let mut hits = 0;
        for ((_, q), t) in queries.iter().zip(&truth) {
            let found = hnsw.nearest(q, 10)?;
            hits += found
                .iter()
                .filter(|f| t.iter().any(|x| x.key == f.key))
                .count();
        }
        let qps10 = queries.len() as f64 / t0.elapsed().as_secs_f64();
        // Graph hits are final (their scores are exact); a graph miss is certified by the
        // exact scan of the same rows: never misses, slow only for queries with no match.
        let mut certified = Vec::with_capacity(queries.len());
        let mut certified_missed = 0;
        for (n, (_, q)) in queries.iter().enumerate() {
            let t0 = Instant::now();
            let hit = match hnsw.search(q, a.threshold)? {
                Some(hit) => Some(hit),
                None => hnsw.search_exact(q, a.threshold)?,
            };
            certified.push(t0.elapsed().as_secs_f64());
            certified_missed += usize::from(above[n] && hit.is_none());
        }
        certified.sort_by(f64::total_cmp);
        let recall = hits as f64 / (10 * queries.len()) as f64;
        let n_above = above.iter().filter(|&&x| x).count();
        println!(
            "| {ef} | {:.3} | {:.3} | {:.3} | {:.3} | {:.0} | {missed} of {n_above} | {planted_missed} of {dup_above} | {:.4} | {:.0} | {:.2} / {:.2} ({certified_missed} missed) |",
            percentile_ms(&lat, 0.5),
            percentile_ms(&lat, 0.99),
            percentile_ms(&lat, 0.999),
            percentile_ms(&cpu, 0.99),
            dedup_qps,
            recall,
            qps10,
            percentile_ms(&certified, 0.5),
            percentile_ms(&certified, 0.99)
        );
        writeln!(
            tsv,
            "{ef}\t{recall:.4}\t{qps10:.0}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{dedup_qps:.0}\t{missed}\t{n_above}\t{planted_missed}",
            percentile_ms(&lat, 0.5),
            percentile_ms(&lat, 0.99),
            percentile_ms(&lat, 0.999),
            percentile_ms(&cpu, 0.99)
        )?;
    }
    tsv.flush()?;
    println!("peak RSS: {:.0} MiB", rss_bytes() as f64 / (1 << 20) as f64);
    Ok(())
}

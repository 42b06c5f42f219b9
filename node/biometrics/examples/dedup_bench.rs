//! 1:N de-dup at scale: a synthetic gallery fitted to ORL, the exact gallery against the
//! HNSW gallery (build time, memory, latency, recall), and the vectors written out for the
//! FAISS side (`bench/dedup_vs_faiss.sh` runs both).
//!
//! `cargo run -p quorumid-biometrics --profile ci --example dedup_bench -- [--n 1000000]
//! [--queries 1000] [--m 16] [--ef-construction 100] [--ef 16,32,64,128] [--threshold 0.438]
//! [--seed 42] [--out DIR] [--graph FILE]`
//!
//! With `--graph FILE`, the HNSW gallery is read from `FILE` if it exists (what a node
//! restoring a persisted graph does) and otherwise built and written there.
//!
//! Writes to `DIR` (default `$HOME/.cache/quorumid-dedup`): `gallery.fvecs` (template `i`
//! has key `i`), `queries.fvecs` (duplicates first: fresh samples of enrolled identities,
//! then as many newcomers), `truth.ivecs` (the exact int8 top 10 of each query) and
//! `rust.tsv` (one line per ef).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use quorumid_biometrics::calibration::pair_scores;
use quorumid_biometrics::face::{Embedding, FaceTemplate, ModelId};
use quorumid_biometrics::gallery::{Gallery, GalleryMatch, HnswGallery, HnswParams};
use quorumid_biometrics::synthetic::{Rng, ScoreTargets, SyntheticFaces, quantile};

type Error = Box<dyn std::error::Error>;

struct Args {
    n: usize,
    queries: usize,
    m: usize,
    ef_construction: usize,
    ef: Vec<usize>,
    threshold: f32,
    seed: u64,
    out: PathBuf,
    graph: Option<PathBuf>,
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
        seed: 42,
        out: Path::new(&home).join(".cache/quorumid-dedup"),
        graph: None,
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

    // 3. Exact reference: the linear int8 gallery.
    let mut exact = Gallery::new(model.clone());
    for (i, t) in templates.iter().enumerate() {
        exact.insert(i as u64, t)?;
    }
    let mut exact_ms = Vec::new();
    let mut truth: Vec<Vec<GalleryMatch>> = Vec::new();
    let mut truth_file = BufWriter::new(File::create(a.out.join("truth.ivecs"))?);
    for (_, q) in &queries {
        let t0 = Instant::now();
        let top = exact.nearest(q, 10)?;
        exact_ms.push(t0.elapsed().as_secs_f64());
        let ids: Vec<i32> = top.iter().map(|m| m.key as i32).collect();
        write_vec(&mut truth_file, &ids, i32::to_le_bytes)?;
        truth.push(top);
    }
    truth_file.flush()?;
    exact_ms.sort_by(f64::total_cmp);
    let above: Vec<bool> = truth
        .iter()
        .map(|t| t.first().is_some_and(|m| m.score >= a.threshold))
        .collect();
    let dup_above = queries
        .iter()
        .zip(&above)
        .filter(|((p, _), x)| p.is_some() && **x)
        .count();
    let new_above = above.iter().filter(|&&x| x).count() - dup_above;
    println!(
        "exact gallery: {:.0} bytes/template; top-10 scan p50 {:.2} ms, p99 {:.2} ms; queries with a \
         template >= {}: {} of {} duplicates, {} of {} newcomers",
        exact.memory_bytes() as f64 / a.n as f64,
        percentile_ms(&exact_ms, 0.5),
        percentile_ms(&exact_ms, 0.99),
        a.threshold,
        dup_above,
        a.queries,
        new_above,
        a.queries
    );
    drop(exact);

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

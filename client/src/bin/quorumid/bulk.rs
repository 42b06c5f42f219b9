//! `quorumid bulk-enroll`: many enrollments from a JSON-lines file or a directory of JSON
//! files, a bounded number in flight, a progress bar, and a summary.
//!
//! One identity per line (or file):
//!
//! ```json
//! {"province": "ON", "document": "P1234567", "issuer": "ON",
//!  "face": "faces/p1234567.f32", "face_model": "sface-2021dec",
//!  "fingers": ["fingers/p1234567-1.iso"], "request_id": "batch7-000001"}
//! ```
//!
//! Only `province` and `document` are required; template paths are relative to the input
//! file's directory. Give each line a `request_id` to make re-running a partly failed batch
//! safe: lines already applied answer their first result instead of a duplicate.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use quorumid_client::{Client, Enrollment, Error, RequestId};
use serde::Deserialize;
use serde_json::json;

use crate::commands::{AuthorityArgs, Usage, face_template, finger_template};
use crate::{Output, exit_code};

#[derive(clap::Args)]
pub struct BulkArgs {
    /// A `.jsonl` file, or a directory of `*.json` files.
    pub input: PathBuf,
    /// Enrollments in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    #[command(flatten)]
    pub authority: AuthorityArgs,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    province: String,
    document: String,
    issuer: Option<String>,
    face: Option<PathBuf>,
    #[serde(default = "default_face_model")]
    face_model: String,
    #[serde(default)]
    fingers: Vec<PathBuf>,
    request_id: Option<String>,
}

fn default_face_model() -> String {
    "sface-2021dec".into()
}

/// Some enrollments of a batch did not go through (the exit code says how bad).
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} enrollments did not go through")]
pub struct Incomplete {
    pub failed: usize,
    pub total: usize,
    pub exit_code: u8,
}

/// (where, text) of every item: `file:line` or the file name.
fn items(input: &Path) -> anyhow::Result<(PathBuf, Vec<(String, String)>)> {
    if input.is_dir() {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(input)
            .with_context(|| format!("listing {}", input.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        let items = paths
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                Ok((p.display().to_string(), text))
            })
            .collect::<anyhow::Result<_>>()?;
        return Ok((input.to_path_buf(), items));
    }
    let text =
        std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
    let base = input.parent().unwrap_or(Path::new(".")).to_path_buf();
    let items = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (format!("{}:{}", input.display(), i + 1), l.to_string()))
        .collect();
    Ok((base, items))
}

fn enrollment(base: &Path, text: &str, args: &BulkArgs) -> anyhow::Result<Enrollment> {
    let line: Line =
        serde_json::from_str(text).map_err(|e| Usage(format!("not a valid line: {e}")))?;
    let authority = args.authority.build("registrar", Some(&line.province))?;
    let mut enrollment = Enrollment::new(&line.province, &line.document, authority)
        .issuer(line.issuer.as_deref().unwrap_or(&line.province));
    if let Some(face) = &line.face {
        enrollment = enrollment.template(face_template(&base.join(face), &line.face_model)?);
    }
    for finger in &line.fingers {
        enrollment = enrollment.template(finger_template(&base.join(finger))?);
    }
    if let Some(id) = line.request_id {
        enrollment = enrollment.request_id(RequestId::new(id));
    }
    Ok(enrollment)
}

pub async fn run(client: &Client, out: &Output, args: &BulkArgs) -> anyhow::Result<()> {
    let (base, items) = items(&args.input)?;
    let total = items.len();
    let progress = if out.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} enrolled or refused, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut results = futures::stream::iter(items.into_iter().map(|(place, text)| {
        let base = base.clone();
        async move {
            let outcome = match enrollment(&base, &text, args) {
                Ok(e) => client.enroll(&e).await.map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            (place, outcome)
        }
    }))
    .buffer_unordered(args.concurrency.max(1));

    let (mut enrolled, mut duplicates, mut invalid, mut refused, mut unavailable, mut denied) =
        (0usize, 0usize, 0usize, 0usize, 0usize, 0usize);
    while let Some((place, outcome)) = results.next().await {
        progress.inc(1);
        match outcome {
            Ok(done) => {
                enrolled += 1;
                if out.json {
                    println!(
                        "{}",
                        json!({ "item": place, "identity_id": done.identity_id, "commit_token": done.token.index() })
                    );
                }
            }
            Err(e) => {
                match exit_code(&e) {
                    2 => invalid += 1,
                    5 => unavailable += 1,
                    6 => denied += 1,
                    _ if matches!(e.downcast_ref::<Error>(), Some(Error::Duplicate { .. })) => {
                        duplicates += 1
                    }
                    _ => refused += 1,
                }
                if out.json {
                    println!(
                        "{}",
                        json!({ "item": place, "error": format!("{e:#}"), "exit_code": exit_code(&e) })
                    );
                } else {
                    progress.suspend(|| eprintln!("{place}: {e:#}"));
                }
            }
        }
    }
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let summary = json!({
        "total": total, "enrolled": enrolled, "duplicates": duplicates, "refused": refused,
        "invalid": invalid, "permission_denied": denied, "unavailable": unavailable,
        "seconds": (seconds * 1000.0).round() / 1000.0,
    });
    out.answer(json!({ "summary": summary }), || {
        format!(
            "{enrolled} enrolled, {duplicates} duplicates, {refused} refused, {invalid} invalid, \
             {denied} denied, {unavailable} unavailable (of {total}) in {seconds:.1}s \
             ({:.1}/s)",
            total as f64 / seconds.max(1e-9)
        )
    });
    let failed = total - enrolled;
    if failed == 0 {
        return Ok(());
    }
    let exit_code = if unavailable > 0 {
        5
    } else if denied > 0 {
        6
    } else if duplicates + refused > 0 {
        4
    } else {
        2
    };
    Err(Incomplete {
        failed,
        total,
        exit_code,
    }
    .into())
}

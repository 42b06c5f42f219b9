//! The machine's physical limits for a replicated write: one fsync of the disk under the
//! data directories (a WAL append), and one round trip over loopback TCP.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const FSYNCS: usize = 200;
const ROUND_TRIPS: usize = 2_000;

#[derive(Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    /// 4 KiB append + fdatasync.
    pub fsync_p50_ms: f64,
    pub fsync_p99_ms: f64,
    /// 64 bytes there and back on loopback TCP (no delay).
    pub loopback_rtt_p50_ms: f64,
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} cores; fsync (4 KiB append + fdatasync) p50 {:.3} ms, p99 {:.3} ms; loopback TCP round trip p50 {:.3} ms",
            self.cores, self.fsync_p50_ms, self.fsync_p99_ms, self.loopback_rtt_p50_ms
        )
    }
}

fn percentile(sorted_ms: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted_ms.len() as f64).ceil() as usize).clamp(1, sorted_ms.len());
    sorted_ms[rank - 1]
}

fn fsync_ms(dir: &Path) -> std::io::Result<Vec<f64>> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(FSYNCS);
    for _ in 0..FSYNCS {
        let start = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        times.push(start.elapsed().as_secs_f64() * 1_000.0);
    }
    drop(file);
    std::fs::remove_file(&path)?;
    times.sort_by(f64::total_cmp);
    Ok(times)
}

async fn round_trip_ms() -> std::io::Result<Vec<f64>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        socket.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        for _ in 0..ROUND_TRIPS {
            socket.read_exact(&mut buf).await?;
            socket.write_all(&buf).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let mut buf = [7u8; 64];
    let mut times = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let start = Instant::now();
        socket.write_all(&buf).await?;
        socket.read_exact(&mut buf).await?;
        times.push(start.elapsed().as_secs_f64() * 1_000.0);
    }
    echo.await.map_err(std::io::Error::other)??;
    times.sort_by(f64::total_cmp);
    Ok(times)
}

pub async fn describe(dir: &Path) -> anyhow::Result<Machine> {
    let owned = dir.to_path_buf();
    let fsync = tokio::task::spawn_blocking(move || fsync_ms(&owned)).await??;
    let rtt = round_trip_ms().await?;
    Ok(Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        fsync_p50_ms: percentile(&fsync, 0.5),
        fsync_p99_ms: percentile(&fsync, 0.99),
        loopback_rtt_p50_ms: percentile(&rtt, 0.5),
    })
}

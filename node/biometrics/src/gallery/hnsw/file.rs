//! The HNSW gallery written to and read back from a byte stream, so that a node can restore
//! its graph at start instead of rebuilding it (a million templates: minutes to build,
//! seconds to read; BENCHMARKS.md).
//!
//! The layout is the in-memory one, little-endian: a header (magic, parameters, model,
//! counts), then the row arrays and the link arrays. Reading checks every count and every
//! link against the header, so a damaged file is refused with an error, never a panic
//! later in a search. It does not check that the graph is a good one, nor that it holds
//! what the caller's state holds: the caller keeps that correspondence (for example by
//! storing the applied log index beside it) and rebuilds when in doubt.
//!
//! The stream holds the int8 templates in the clear: biometric data. Whoever writes it to
//! disk must seal it as it seals the templates in its database.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Mutex;

use super::{HnswGallery, HnswParams};
use crate::face::{ModelId, dot_i8_dispatch};

const MAGIC: &[u8; 8] = b"QIDHNSW1";

fn bad(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HNSW gallery file: {what}"),
    )
}

fn put_u64(w: &mut impl Write, v: u64) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

fn get_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// A count from the file, refused above `limit` (so a damaged count cannot ask for
/// unbounded memory).
fn get_len(r: &mut impl Read, limit: u64, what: &str) -> io::Result<usize> {
    let v = get_u64(r)?;
    if v > limit {
        return Err(bad(what));
    }
    usize::try_from(v).map_err(|_| bad(what))
}

fn put_u32s(w: &mut impl Write, values: &[u32]) -> io::Result<()> {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    w.write_all(&bytes)
}

/// `n` bytes, the buffer growing only as they arrive (a damaged count meets the end of
/// the file, not an allocation failure).
fn get_bytes(r: &mut impl Read, n: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    r.take(n as u64).read_to_end(&mut bytes)?;
    if bytes.len() != n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(bytes)
}

fn get_u32s(r: &mut impl Read, n: usize) -> io::Result<Vec<u32>> {
    let bytes = get_bytes(r, n * 4)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect())
}

impl HnswGallery {
    /// Writes the whole gallery (templates and graph).
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<()> {
        let p = self.params;
        w.write_all(MAGIC)?;
        for v in [p.m, p.ef_construction, p.ef_search, p.exact_below] {
            put_u64(w, v as u64)?;
        }
        put_u64(w, p.seed)?;
        put_u64(w, self.model.name().len() as u64)?;
        w.write_all(self.model.name().as_bytes())?;
        put_u64(w, self.dim as u64)?;
        put_u64(w, self.keys.len() as u64)?;
        put_u64(w, self.upper.len() as u64)?;
        put_u64(w, u64::from(self.entry))?;
        put_u64(w, self.top as u64)?;
        let values: Vec<u8> = self.values.iter().map(|&v| v as u8).collect();
        w.write_all(&values)?;
        let norms: Vec<u8> = self
            .inverse_norms
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        w.write_all(&norms)?;
        let keys: Vec<u8> = self.keys.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_all(&keys)?;
        let live: Vec<u8> = self.live.iter().map(|&l| u8::from(l)).collect();
        w.write_all(&live)?;
        put_u32s(w, &self.links0)?;
        put_u32s(w, &self.upper_start)?;
        put_u32s(w, &self.upper)
    }

    /// Reads a gallery written by [`write_to`](Self::write_to) for `model`; refuses one of
    /// another model, or any count or link that does not fit.
    pub fn read_from(model: ModelId, r: &mut impl Read) -> io::Result<Self> {
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(bad("not an HNSW gallery file"));
        }
        let m = get_len(r, 1 << 12, "m")?;
        let ef_construction = get_len(r, 1 << 24, "ef_construction")?;
        let ef_search = get_len(r, 1 << 24, "ef_search")?;
        let exact_below = get_len(r, u64::MAX, "exact_below")?;
        let seed = get_u64(r)?;
        let name_len = get_len(r, 1 << 12, "model name")?;
        let name = get_bytes(r, name_len)?;
        let dim = get_len(r, 1 << 16, "dimension")?;
        if name != model.name().as_bytes() || dim != model.dimension() {
            return Err(bad("written for another model"));
        }
        let params = HnswParams {
            m,
            ef_construction,
            ef_search,
            seed,
            exact_below,
        };
        if m < 2 || ef_construction < 2 || ef_search < 1 {
            return Err(bad("parameters out of range"));
        }
        let n = get_len(r, u64::from(u32::MAX - 1), "row count")?;
        let upper_len = get_len(r, u64::from(u32::MAX), "upper links")?;
        let entry = u32::try_from(get_u64(r)?).map_err(|_| bad("entry"))?;
        let top = get_len(r, 64, "top level")?;

        let values = get_bytes(r, n * dim)?;
        let values: Vec<i8> = values.into_iter().map(|v| v as i8).collect();
        let bytes = get_bytes(r, n * 4)?;
        let inverse_norms: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        let bytes = get_bytes(r, n * 8)?;
        let keys: Vec<u64> = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        let bytes = get_bytes(r, n)?;
        if bytes.iter().any(|&b| b > 1) {
            return Err(bad("live flags"));
        }
        let live: Vec<bool> = bytes.into_iter().map(|b| b == 1).collect();
        let links0 = get_u32s(r, n * (2 * m + 1))?;
        let upper_start = get_u32s(r, n)?;
        let upper = get_u32s(r, upper_len)?;
        let mut rest = [0u8; 1];
        if r.read(&mut rest)? != 0 {
            return Err(bad("trailing bytes"));
        }

        // Structure: counts within their blocks, links to existing rows, the upper blocks
        // tiling `upper` (a slot on level L owns L blocks), an upper link on level l only
        // to a slot on level l or above, the entry on the top level.
        let links_ok = |block: &[u32], width: usize| {
            (block[0] as usize) < width
                && block[1..1 + block[0] as usize]
                    .iter()
                    .all(|&l| (l as usize) < n)
        };
        if !links0
            .chunks_exact(2 * m + 1)
            .all(|b| links_ok(b, 2 * m + 1))
        {
            return Err(bad("layer-0 links"));
        }
        let width = m + 1;
        let mut owners: Vec<(usize, usize)> = upper_start
            .iter()
            .enumerate()
            .filter(|(_, s)| **s != u32::MAX)
            .map(|(slot, &s)| (s as usize, slot))
            .collect();
        owners.sort_unstable();
        let mut levels = vec![0usize; n];
        let mut expected_start = 0;
        for (i, &(start, slot)) in owners.iter().enumerate() {
            let end = owners.get(i + 1).map_or(upper_len, |o| o.0);
            if start != expected_start || end <= start || !(end - start).is_multiple_of(width) {
                return Err(bad("upper links"));
            }
            levels[slot] = (end - start) / width;
            if levels[slot] > top {
                return Err(bad("a level above the top"));
            }
            expected_start = end;
        }
        if expected_start != upper_len {
            return Err(bad("upper links"));
        }
        for &(start, slot) in &owners {
            for (l, block) in upper[start..start + levels[slot] * width]
                .chunks_exact(width)
                .enumerate()
            {
                if !links_ok(block, width)
                    || block[1..1 + block[0] as usize]
                        .iter()
                        .any(|&t| levels[t as usize] < l + 1)
                {
                    return Err(bad("upper links"));
                }
            }
        }
        if (n == 0) != (entry == u32::MAX)
            || (n > 0 && (entry as usize >= n || levels[entry as usize] != top))
        {
            return Err(bad("entry point"));
        }
        let mut rows = HashMap::with_capacity(n);
        for (slot, (&key, &l)) in keys.iter().zip(&live).enumerate() {
            if l && rows.insert(key, slot as u32).is_some() {
                return Err(bad("a key twice"));
            }
        }
        let dead = n - rows.len();
        Ok(HnswGallery {
            model,
            params,
            dim,
            dot: dot_i8_dispatch(),
            values,
            inverse_norms,
            keys,
            live,
            rows,
            links0,
            upper_start,
            upper,
            entry,
            top,
            dead,
            visited: Mutex::new(Vec::new()),
        })
    }
}

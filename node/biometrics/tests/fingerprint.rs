//! The ISO/IEC 19794-2 parser on the FVC2002 records, on hand-broken records, and on
//! random, truncated and mutated bytes (it must return an error, never panic).

use std::path::{Path, PathBuf};

use quorumid_biometrics::fingerprint::{
    ExtendedArea, FingerRecord, MinutiaKind, RecordError, encode,
};

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/fvc2002")
}

fn all_records() -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for db in ["DB1_B", "DB2_B", "DB3_B", "DB4_B"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(data().join(db))
            .expect("shared FVC2002 data present")
            .map(|e| e.expect("directory entry").path())
            .collect();
        paths.sort();
        for p in paths {
            let bytes = std::fs::read(&p).expect("readable record");
            out.push((p, bytes));
        }
    }
    out
}

/// splitmix64: a small deterministic generator for the property tests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn every_fvc_record_parses_and_round_trips() {
    let records = all_records();
    assert_eq!(records.len(), 320);
    for (path, bytes) in &records {
        let r = FingerRecord::parse(bytes).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        assert_eq!((r.width, r.height), (300, 400), "{path:?}");
        assert_eq!((r.resolution_x, r.resolution_y), (197, 197));
        assert_eq!(r.views.len(), 1);
        let v = &r.views[0];
        assert!(v.minutiae.len() >= 13, "{path:?}");
        assert!(v.minutiae.iter().all(|m| m.kind != MinutiaKind::Other));
        assert_eq!(encode(&r).as_deref(), Some(bytes.as_slice()), "{path:?}");
    }
    // The first minutia of DB1_B/101_1, decoded by hand: 80 a5 00 30 6b 00.
    let r = FingerRecord::parse(&records[0].1).unwrap();
    let m = r.views[0].minutiae[0];
    assert_eq!(
        (m.kind, m.x, m.y, m.angle, m.quality),
        (MinutiaKind::Bifurcation, 165, 48, 107, 0)
    );
}

fn sample() -> Vec<u8> {
    std::fs::read(data().join("DB1_B/101_1.iso")).expect("record")
}

#[test]
fn broken_records_are_explained() {
    let good = sample();
    let with = |offset: usize, value: u8| {
        let mut b = good.clone();
        b[offset] = value;
        FingerRecord::parse(&b).unwrap_err()
    };
    assert!(matches!(with(0, b'X'), RecordError::BadFormatId { .. }));
    assert!(matches!(with(5, b'3'), RecordError::BadVersion { .. }));
    assert!(matches!(
        with(11, 0),
        RecordError::LengthMismatch { declared: 0, .. }
    ));
    assert!(matches!(
        with(23, 1),
        RecordError::ReservedHeaderByte { value: 1 }
    ));
    assert!(matches!(with(22, 0), RecordError::NoFingerViews));
    assert!(matches!(
        with(24, 11),
        RecordError::BadFingerPosition { value: 11, .. }
    ));
    assert!(matches!(
        with(25, 4),
        RecordError::BadImpressionType { value: 4, .. }
    ));
    assert!(matches!(
        with(26, 101),
        RecordError::BadFingerQuality { value: 101, .. }
    ));
    // First minutia at offset 28.
    assert!(matches!(
        with(28, 0xc0),
        RecordError::BadMinutiaType { view: 0, index: 0 }
    ));
    assert!(matches!(
        with(30, 0x40),
        RecordError::ReservedMinutiaBits { index: 0, .. }
    ));
    assert!(matches!(
        with(34, 0x7f),
        RecordError::MinutiaOutsideImage { index: 1, .. }
    ));
    assert!(matches!(
        with(33, 200),
        RecordError::BadMinutiaQuality { index: 0, .. }
    ));
    let text = with(34, 0x7f).to_string();
    assert!(
        text.contains("minutia 1") && text.contains("300x400"),
        "{text}"
    );
    // Trailing byte (with the length fixed up to include it).
    let mut long = good.clone();
    long.push(0);
    let len = long.len() as u32;
    long[8..12].copy_from_slice(&len.to_be_bytes());
    assert_eq!(
        FingerRecord::parse(&long),
        Err(RecordError::TrailingBytes { extra: 1 })
    );
}

#[test]
fn extended_data_and_several_views() {
    let mut r = FingerRecord::parse(&sample()).unwrap();
    r.views[0].extended.push(ExtendedArea {
        type_id: 2,
        data: vec![1, 2, 3],
    });
    let mut second = r.views[0].clone();
    second.position = 2;
    second.minutiae.truncate(5);
    second.extended.clear();
    r.views.push(second);
    let bytes = encode(&r).unwrap();
    assert_eq!(FingerRecord::parse(&bytes).unwrap(), r);
    // The same finger and view twice.
    let mut dup = r.clone();
    dup.views[1].position = dup.views[0].position;
    let err = FingerRecord::parse(&encode(&dup).unwrap()).unwrap_err();
    assert!(matches!(err, RecordError::DuplicateView { view: 1, .. }));
    // An extended area whose length runs past its block.
    let mut bad = bytes.clone();
    let area = 28 + 6 * r.views[0].minutiae.len() + 2; // after the block length
    bad[area + 3] = 200;
    assert!(matches!(
        FingerRecord::parse(&bad),
        Err(RecordError::BadExtendedArea { view: 0, .. })
    ));
}

#[test]
fn truncated_records_fail_cleanly() {
    for (path, bytes) in all_records().iter().step_by(16) {
        for len in 0..bytes.len() {
            assert!(
                FingerRecord::parse(&bytes[..len]).is_err(),
                "{path:?} cut at {len}"
            );
        }
    }
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let records = all_records();
    let mut rng = Rng(0x5eed);
    let mut accepted = 0;
    for round in 0..200_000 {
        let (_, base) = &records[rng.below(records.len())];
        let mut bytes = base.clone();
        match round % 4 {
            // A few random byte changes.
            0 | 1 => {
                for _ in 0..1 + rng.below(4) {
                    let i = rng.below(bytes.len());
                    bytes[i] = rng.next() as u8;
                }
            }
            // A random cut, with the length field fixed up so parsing goes deeper.
            2 => {
                bytes.truncate(12 + rng.below(bytes.len() - 12));
                let len = bytes.len() as u32;
                bytes[8..12].copy_from_slice(&len.to_be_bytes());
            }
            // Pure noise behind a valid-looking header.
            _ => {
                let len = rng.below(400);
                bytes = (0..len).map(|_| rng.next() as u8).collect();
                if len >= 12 {
                    bytes[..8].copy_from_slice(b"FMR\0 20\0");
                    bytes[8..12].copy_from_slice(&(len as u32).to_be_bytes());
                }
            }
        }
        if let Ok(r) = FingerRecord::parse(&bytes) {
            // Whatever parses must re-encode to the same bytes.
            assert_eq!(encode(&r).as_deref(), Some(bytes.as_slice()));
            accepted += 1;
        }
    }
    // Changes to angle and quality bytes keep records valid, so some must pass.
    assert!(accepted > 1000, "{accepted}");
}

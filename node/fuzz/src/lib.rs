//! What the fuzz targets check, one function per target and named after it, and the seed
//! inputs of their corpus.
//!
//! The checks live here rather than in `fuzz_targets/` so that `tests/corpus.rs` can replay
//! the committed corpus through them with a plain `cargo test`. Each asserts a property where
//! one exists (a parsed value writes back to its input, decoding inverts encoding, applying a
//! batch twice changes nothing the second time), not only that nothing panics.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use quorumid_biometrics::fingerprint::{
    self, ExtendedArea, FingerRecord, FingerView, Minutia, MinutiaKind,
};
use quorumid_biometrics::mcc::Matcher;
use openraft::CommittedLeaderId;
use quorumid_registry::codec::{decode, encode};
use quorumid_registry::memory::MemoryState;
use quorumid_registry::{
    Action, Authority, Batch, Command, DocumentKey, IdParseError, IdentityId, Modality, Outcome,
    Proposal, REQUEST_WINDOW_MS, Reason, Rejection, Request, Response, Scope, Template,
    TemplateFormat,
};
use quorumid_storage_format::snapshot::SNAPSHOT_FORMAT;
use quorumid_storage_format::{
    Cf, LogId, Membership, NodeInfo, Sealer, SnapshotFile, SnapshotMeta, StateDigest,
    StoredMembership,
};

/// The fuzz targets, by name: the binaries in `fuzz_targets/` and the directories of `corpus/`.
pub const TARGETS: [&str; 4] = ["iso19794", "identity_id", "command", "snapshot"];

/// Runs the checks of target `target` on `data`.
pub fn check(target: &str, data: &[u8]) {
    match target {
        "iso19794" => iso19794(data),
        "identity_id" => identity_id(data),
        "command" => command(data),
        "snapshot" => snapshot(data),
        other => panic!("no fuzz target {other}"),
    }
}

/// How many finger views of a record are turned into matching templates (each is compared
/// with each): enough to reach the matcher with any view, few enough to keep runs fast.
const MATCHED_VIEWS: usize = 3;

fn matcher() -> &'static Matcher {
    static MATCHER: OnceLock<Matcher> = OnceLock::new();
    MATCHER.get_or_init(Matcher::default)
}

/// An ISO/IEC 19794-2:2005 record: the strict parser refuses it with an error, or it writes
/// back to exactly the same bytes (the format has one encoding of a record) and the matcher
/// makes templates of its views whose comparison scores lie in [0, 1].
pub fn iso19794(data: &[u8]) {
    let record = match FingerRecord::parse(data) {
        Ok(record) => record,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    assert_eq!(
        fingerprint::encode(&record).as_deref(),
        Some(data),
        "a parsed record writes back to its own bytes"
    );
    let matcher = matcher();
    let templates: Vec<_> = record
        .views
        .iter()
        .take(MATCHED_VIEWS)
        .map(|view| matcher.template_from_view(&record, view))
        .collect();
    for a in &templates {
        for b in &templates {
            let score = matcher.compare(a, b);
            assert!((0.0..=1.0).contains(&score), "score {score} outside [0, 1]");
        }
    }
}

/// An identity id, from text or from the codec: whatever is accepted is a canonical id that
/// reads back from its display, in any case, and through the codec.
pub fn identity_id(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    match IdentityId::parse(&input) {
        Ok(id) => {
            assert_canonical(&id);
            assert_eq!(
                IdentityId::parse(&input.to_ascii_lowercase()).as_ref(),
                Ok(&id),
                "parsing is case-insensitive"
            );
            assert_eq!(
                decode::<IdentityId>("identity id", &encode(&id))
                    .ok()
                    .as_ref(),
                Some(&id),
                "an id decodes from its encoding"
            );
        }
        Err(IdParseError::Length(n)) => assert!(n != 17 && n == input.chars().count()),
        Err(IdParseError::Character(position)) => assert!(position < 17),
        Err(IdParseError::Check) => assert_eq!(input.chars().count(), 17),
    }
    // Ids also arrive encoded (log entries, records, snapshots): decoding accepts valid ids only.
    if let Ok(id) = decode::<IdentityId>("identity id", data) {
        assert_canonical(&id);
    }
}

/// The id's display is canonical (17 upper-case Crockford characters) and parses back to it.
fn assert_canonical(id: &IdentityId) {
    let shown = id.to_string();
    assert_eq!(shown, id.as_str());
    assert!(
        shown.len() == 17
            && shown
                .bytes()
                .all(|b| b.is_ascii_digit() || (b.is_ascii_uppercase() && !b"ILOU".contains(&b))),
        "{shown:?} is not a canonical id"
    );
    assert_eq!(
        IdentityId::parse(&shown).as_ref(),
        Ok(id),
        "an id reads back from its display"
    );
}

/// A log entry's payload, as the state machine decodes it: a batch of commands. And a
/// forwarded write (`Request`), as the leader decodes it from a peer. What decodes re-encodes
/// to something that decodes to the same value; a decoded batch applies without panicking,
/// keeps the state's invariants, and applying it again answers every recorded command as the
/// first time and changes no identity (exactly once, DESIGN.md).
pub fn command(data: &[u8]) {
    if let Ok(request) = decode::<Request>("forwarded write", data) {
        assert_eq!(
            decode::<Request>("forwarded write", &encode(&request))
                .ok()
                .as_ref(),
            Some(&request)
        );
        request.fingerprint();
    }
    let Ok(batch) = decode::<Batch>("log entry payload", data) else {
        return;
    };
    let encoded = encode(&batch);
    assert!(encoded.len() <= data.len(), "the encoding is the shortest");
    assert_eq!(
        decode::<Batch>("log entry payload", &encoded).ok().as_ref(),
        Some(&batch),
        "a batch decodes from its encoding"
    );
    for command in &batch {
        for id in command_ids(command) {
            assert_canonical(id);
        }
    }

    // Every command of a batch is applied at the batch's log index, in order.
    let mut state = MemoryState::default();
    let first: Vec<Response> = batch.iter().map(|c| state.run(1, c)).collect();
    assert_invariants(&state);
    let times = batch.iter().map(|c| c.at_unix_ms);
    let spread = times.clone().max().unwrap_or(0) - times.min().unwrap_or(0);
    if spread >= REQUEST_WINDOW_MS {
        return; // Requests recorded early in the batch may expire before its end.
    }
    let identities = state.identities.clone();
    let events = state.events.clone();
    let documents = state.documents.clone();
    for (command, answered) in batch.iter().zip(&first) {
        let again = state.run(2, command);
        let recorded = !matches!(
            answered.outcome,
            Outcome::Rejected(Rejection::IdentityIdTaken | Rejection::RequestIdReused)
        );
        if recorded {
            assert_eq!(&again, answered, "a retried command gets its first answer");
        }
    }
    assert_eq!(state.identities, identities, "a retry changes no identity");
    assert_eq!(state.events, events, "a retry adds no event");
    assert_eq!(state.documents, documents, "a retry adds no document");
    assert_invariants(&state);
}

/// The storage keys the snapshot target opens sealed values with (and its seeds are sealed
/// with): an active key and a retired one.
fn snapshot_sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER.get_or_init(|| Sealer::new((2, [0x5a; 32]), [(1, [0xa5; 32])]))
}

/// A snapshot file, as a peer sends it in `InstallSnapshot` or a disk gives it back: refused
/// with an error, or every record is in a state column family, opens with the node's keys,
/// and the records add up to the digest the file carries; what is accepted encodes back to a
/// file that decodes to the same records.
pub fn snapshot(data: &[u8]) {
    let sealer = snapshot_sealer();
    let file = match SnapshotFile::decode(data, sealer) {
        Ok(file) => file,
        Err(error) => {
            assert!(!error.to_string().is_empty());
            return;
        }
    };
    let mut digest = StateDigest::default();
    for (tag, key, value) in &file.records {
        let cf = Cf::from_tag(*tag).expect("an accepted record names a column family");
        assert!(Cf::STATE.contains(&cf), "{cf:?} is not state");
        let value = sealer
            .open_record(cf, key, value)
            .expect("an accepted record opens");
        digest.add(cf, key, &value);
    }
    assert_eq!(digest, file.digest, "accepted records add up to the digest");
    let again = SnapshotFile::decode(&encode(&file), sealer).expect("a re-encoded file decodes");
    assert_eq!(again.records, file.records);
    assert_eq!(again.meta, file.meta);
}

fn command_ids(command: &Command) -> impl Iterator<Item = &IdentityId> {
    let target = match &command.request.proposal {
        Proposal::ChangeStatus { identity, .. }
        | Proposal::BindHolderKey { identity, .. }
        | Proposal::SetModalityLock { identity, .. }
        | Proposal::RotateHolderKey { identity, .. } => Some(identity),
        Proposal::Enroll { .. } => None,
    };
    command.new_identity.iter().chain(target)
}

/// What every reachable registry state satisfies.
fn assert_invariants(state: &MemoryState) {
    for (key, id) in &state.documents {
        assert_eq!(
            &state.identities[id].document, key,
            "a document's identity holds it"
        );
    }
    for (id, identity) in &state.identities {
        assert_eq!(&identity.id, id);
        assert_eq!(state.documents.get(&identity.document), Some(id));
        let history = state.events.range((id.clone(), 0)..=(id.clone(), u64::MAX));
        assert!(
            history.map(|((_, seq), _)| *seq).eq(0..identity.events),
            "an identity's history is numbered 0..events"
        );
    }
    for (id, _) in state.events.keys() {
        assert!(
            state.identities.contains_key(id),
            "an event belongs to an identity"
        );
    }
    for id in state.templates.keys() {
        assert!(
            state.identities.contains_key(id),
            "templates belong to an identity"
        );
    }
    assert_eq!(state.requests.len(), state.request_times.len());
    for (at_unix_ms, request_id) in &state.request_times {
        assert_eq!(state.requests[request_id].at_unix_ms, *at_unix_ms);
    }
    if !state.identities.is_empty() {
        assert!(state.document_key_id.is_some());
    }
}

/// The seed inputs of the corpus: (target, file name, bytes). `tests/corpus.rs` checks that
/// each is in `corpus/<target>/<name>` (and writes them there with `QUORUMID_WRITE_SEEDS=1`),
/// so a change to an encoding cannot leave the fuzzers starting from stale inputs.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, record) in seed_records() {
        let bytes = fingerprint::encode(&record).expect("seed records fit the format");
        seeds.push(("iso19794", format!("seed-{name}"), bytes));
    }
    for (name, text) in seed_ids() {
        seeds.push(("identity_id", format!("seed-{name}"), text.into_bytes()));
    }
    for (name, batch) in seed_batches() {
        seeds.push(("command", format!("seed-{name}"), encode(&batch)));
    }
    let forwarded = seed_batches()[0].1[0].request.clone();
    seeds.push(("command", "seed-forwarded-write".into(), encode(&forwarded)));
    for (name, file) in seed_snapshots() {
        seeds.push(("snapshot", format!("seed-{name}"), encode(&file)));
    }
    seeds
}

/// Snapshot files: an empty state, and a three-node cluster's state with records of every
/// state column family, sealed under the active and the retired key.
fn seed_snapshots() -> Vec<(&'static str, SnapshotFile)> {
    let empty = SnapshotFile {
        format: SNAPSHOT_FORMAT,
        meta: SnapshotMeta::default(),
        digest: StateDigest::default(),
        records: Vec::new(),
    };
    let node = |n: u64| NodeInfo {
        province: ["ON", "QC", "BC"][n as usize % 3].into(),
        api_addr: format!("https://10.0.0.{n}:7100"),
        raft_addr: format!("https://10.0.0.{n}:7200"),
    };
    let last = LogId::new(CommittedLeaderId::new(3, 1), 42);
    let nodes: BTreeMap<u64, NodeInfo> = (1..=3).map(|n| (n, node(n))).collect();
    let membership = Membership::new(vec![nodes.keys().copied().collect()], nodes);
    let meta = SnapshotMeta {
        last_log_id: Some(last),
        last_membership: StoredMembership::new(Some(LogId::new(CommittedLeaderId::new(1, 1), 1)), membership),
        snapshot_id: "3-42-0".into(),
    };
    let retired = Sealer::new((1, [0xa5; 32]), []);
    let id = IdentityId::from_random([7; 10]);
    let mut history_key = id.as_str().as_bytes().to_vec();
    history_key.extend_from_slice(&0u64.to_be_bytes());
    let records: Vec<(Cf, Vec<u8>, Vec<u8>, &Sealer)> = vec![
        (Cf::Identities, id.as_str().into(), b"identity".to_vec(), snapshot_sealer()),
        (Cf::Documents, vec![3; 32], id.as_str().into(), &retired),
        (Cf::Templates, id.as_str().into(), vec![0x46; 64], snapshot_sealer()),
        (Cf::Requests, b"request-1".to_vec(), b"answer".to_vec(), snapshot_sealer()),
        (Cf::RequestTimes, [0, 0, 1, 0x8b, 0xcf, 0xe5, 0x68, 0, b'r'].to_vec(), Vec::new(), snapshot_sealer()),
        (Cf::Registry, b"document_key_id".to_vec(), vec![9; 8], snapshot_sealer()),
        (Cf::History, history_key, b"enrolled".to_vec(), snapshot_sealer()),
    ];
    let mut digest = StateDigest::default();
    let records = records
        .into_iter()
        .map(|(cf, key, value, sealer)| {
            digest.add(cf, &key, &value);
            let stored = sealer.seal_record(cf, &key, &value).into_owned();
            (cf.tag(), key, stored)
        })
        .collect();
    let state = SnapshotFile {
        format: SNAPSHOT_FORMAT,
        meta,
        digest,
        records,
    };
    vec![("empty-state", empty), ("three-nodes", state)]
}

/// Synthetic records (not real fingerprints): minutiae from a fixed pseudo-random sequence.
fn seed_records() -> Vec<(&'static str, FingerRecord)> {
    let mut state = 0x9e37_79b9_u32;
    let mut next = move |bound: u32| {
        state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (state >> 8) % bound
    };
    let mut minutiae = |n: usize| -> Vec<Minutia> {
        (0..n)
            .map(|i| Minutia {
                kind: [MinutiaKind::RidgeEnding, MinutiaKind::Bifurcation][i % 2],
                x: next(296) as u16,
                y: next(560) as u16,
                angle: next(256) as u8,
                quality: next(101) as u8,
            })
            .collect()
    };
    let view = |position, view_number, minutiae, extended| FingerView {
        position,
        view_number,
        impression_type: 0,
        quality: 80,
        minutiae,
        extended,
    };
    let record = |views| FingerRecord {
        compliance: 0,
        device_type: 0,
        width: 296,
        height: 560,
        resolution_x: 197,
        resolution_y: 197,
        views,
    };
    let one_view = record(vec![view(1, 0, minutiae(32), vec![])]);
    let two_views = record(vec![
        view(
            2,
            0,
            minutiae(20),
            vec![ExtendedArea {
                type_id: 1,
                data: vec![0, 1, 7],
            }],
        ),
        view(2, 1, minutiae(12), vec![]),
    ]);
    let empty = record(vec![view(0, 0, vec![], vec![])]);
    vec![
        ("one-view", one_view),
        ("two-views-extended-data", two_views),
        ("no-minutiae", empty),
    ]
}

fn seed_ids() -> Vec<(&'static str, String)> {
    let id = IdentityId::from_random([0x4f, 3, 0x91, 0, 7, 0xee, 1, 0x10, 0x2c, 5]).to_string();
    let typed = id.to_lowercase().replace('0', "o").replace('1', "l");
    let mut typo = id.clone().into_bytes();
    typo[3] = if typo[3] == b'7' { b'8' } else { b'7' };
    vec![
        ("canonical", id),
        ("lower-case-o-and-l", typed),
        ("typo", String::from_utf8(typo).expect("ascii")),
    ]
}

fn seed_batches() -> Vec<(&'static str, Batch)> {
    let province = |p: &str| Authority {
        id: format!("registrar-{p}"),
        scope: Scope::Province(p.into()),
    };
    let national = Authority {
        id: "national".into(),
        scope: Scope::National,
    };
    let command = |request_id: &str, at_unix_ms, new_identity, proposal| {
        let request = Request {
            request_id: request_id.into(),
            proposal,
        };
        Command {
            fingerprint: request.fingerprint(),
            request,
            at_unix_ms,
            new_identity,
        }
    };
    let enroll = |request_id: &str, seed: u8, document: u8, templates| {
        command(
            request_id,
            1_700_000_000_000 + u64::from(seed),
            Some(IdentityId::from_random([seed; 10])),
            Proposal::Enroll {
                home_province: "ON".into(),
                document: DocumentKey([document; 32]),
                document_key_id: [9; 8],
                templates,
                authority: province("ON"),
                holder_key: (seed % 2 == 1).then_some([seed; 32]),
            },
        )
    };
    let change = |request_id: &str, seed: u8, action, authority| {
        command(
            request_id,
            1_700_000_100_000,
            None,
            Proposal::ChangeStatus {
                identity: IdentityId::from_random([seed; 10]),
                action,
                reason: Reason::DocumentLost,
                authority,
            },
        )
    };
    let face = Template {
        format: TemplateFormat::FaceEmbeddingF32,
        model_id: "sface-2021dec".into(),
        data: [0.5f32, -0.25, 0.125, 0.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    };
    let finger = Template {
        format: TemplateFormat::Iso19794_2_2005,
        model_id: "iso19794-2".into(),
        data: fingerprint::encode(&seed_records()[2].1).expect("seed records fit the format"),
    };
    vec![
        ("enroll", vec![enroll("r-1", 1, 1, vec![face, finger])]),
        (
            "status-changes",
            vec![
                enroll("r-1", 1, 1, vec![]),
                change("r-2", 1, Action::Suspend, province("ON")),
                change("r-3", 1, Action::Reinstate, province("ON")),
                change("r-4", 1, Action::Revoke, national.clone()),
                change("r-5", 1, Action::Reinstate, national),
            ],
        ),
        (
            "holder-key",
            vec![
                enroll("r-1", 1, 1, vec![]),
                command(
                    "r-2",
                    1_700_000_200_000,
                    None,
                    Proposal::SetModalityLock {
                        identity: IdentityId::from_random([1; 10]),
                        modality: Modality::Face,
                        locked: true,
                        signed_with: [1; 32],
                    },
                ),
                command(
                    "r-3",
                    1_700_000_300_000,
                    None,
                    Proposal::BindHolderKey {
                        identity: IdentityId::from_random([1; 10]),
                        key: Some([2; 32]),
                        reason: Reason::KeyCompromise,
                        authority: province("ON"),
                    },
                ),
                command(
                    "r-4",
                    1_700_000_400_000,
                    None,
                    Proposal::SetModalityLock {
                        identity: IdentityId::from_random([1; 10]),
                        modality: Modality::Face,
                        locked: false,
                        signed_with: [1; 32],
                    },
                ),
                command(
                    "r-5",
                    1_700_000_500_000,
                    None,
                    Proposal::RotateHolderKey {
                        identity: IdentityId::from_random([1; 10]),
                        new_key: [3; 32],
                        signed_with: [2; 32],
                    },
                ),
            ],
        ),
        (
            "retries-and-refusals",
            vec![
                enroll("r-1", 1, 1, vec![]),
                enroll("r-1", 2, 1, vec![]),
                enroll("r-2", 3, 1, vec![]),
                enroll("r-1", 4, 4, vec![]),
                change("r-5", 1, Action::Revoke, province("QC")),
                change("r-6", 9, Action::Suspend, province("ON")),
            ],
        ),
    ]
}

//! The column families of a node's database: what each holds, the one-byte tag that names it
//! in snapshots and digests, and which are sealed at rest.

/// Column families. The `Sm*` ones hold the state machine and are covered by its digest,
/// except `SmMeta` (applied log id, membership, the digest itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Cf {
    /// Raft log entries, keyed by big-endian index.
    Log,
    /// Vote, committed log id, last purged log id.
    RaftMeta,
    /// Applied log id, last membership, state digest.
    SmMeta,
    /// Identity id -> identity record.
    Identities,
    /// Document key -> identity id.
    Documents,
    /// Identity id -> templates.
    Templates,
    /// Request id -> remembered request.
    Requests,
    /// Big-endian proposal time ++ request id -> (): the request window's expiry order.
    RequestTimes,
    /// Registry-wide facts (the document key id).
    Registry,
    /// Identity id ++ big-endian event number -> history event.
    History,
}

impl Cf {
    /// (New column families go last: a column family's tag is its position here.)
    pub const ALL: [Cf; 10] = [
        Cf::Log,
        Cf::RaftMeta,
        Cf::SmMeta,
        Cf::Identities,
        Cf::Documents,
        Cf::Templates,
        Cf::Requests,
        Cf::RequestTimes,
        Cf::Registry,
        Cf::History,
    ];

    /// The column families that make up the registry state (snapshotted and digested).
    pub const STATE: [Cf; 7] = [
        Cf::Identities,
        Cf::Documents,
        Cf::Templates,
        Cf::Requests,
        Cf::RequestTimes,
        Cf::Registry,
        Cf::History,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Cf::Log => "raft_log",
            Cf::RaftMeta => "raft_meta",
            Cf::SmMeta => "sm_meta",
            Cf::Identities => "identities",
            Cf::Documents => "documents",
            Cf::Templates => "templates",
            Cf::Requests => "requests",
            Cf::RequestTimes => "request_times",
            Cf::Registry => "registry",
            Cf::History => "history",
        }
    }

    /// A stable one-byte tag, used in snapshots and digests.
    pub fn tag(self) -> u8 {
        Cf::ALL.iter().position(|c| *c == self).unwrap_or(0) as u8
    }

    pub fn from_tag(tag: u8) -> Option<Cf> {
        Cf::ALL.get(tag as usize).copied()
    }

    /// The column families whose values are sealed at rest.
    pub const SEALED: [Cf; 4] = [Cf::Log, Cf::Identities, Cf::Documents, Cf::Templates];

    pub fn sealed(self) -> bool {
        Cf::SEALED.contains(&self)
    }

    /// A sealed value's place (its associated data): column family name, a zero, the key.
    pub fn place(self, key: &[u8]) -> Vec<u8> {
        let mut place = Vec::with_capacity(self.name().len() + 1 + key.len());
        place.extend_from_slice(self.name().as_bytes());
        place.push(0);
        place.extend_from_slice(key);
        place
    }
}

//! openraft's own storage test suite, run against the RocksDB log store and state machine.

use openraft::testing::{StoreBuilder, Suite};
use quorumid_node::raft::log_store::LogStore;
use quorumid_node::raft::state_machine::StateMachine;
use quorumid_node::raft::store::Store;
use quorumid_node::raft::{StorageError, TypeConfig};
use quorumid_storage_format::Sealer;
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let sealer = Sealer::new((1, [5; 32]), []);
        let store = Store::open(&dir.path().join("db"), sealer).expect("open RocksDB");
        let state_machine = StateMachine::open(store.clone(), &dir.path().join("snapshots"), None)?;
        Ok((dir, LogStore::new(store), state_machine))
    }
}

#[test]
fn openraft_storage_suite_passes_on_rocksdb() {
    if let Err(e) = Suite::test_all(RocksBuilder) {
        panic!("openraft storage suite failed: {e}");
    }
}

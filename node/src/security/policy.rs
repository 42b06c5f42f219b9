//! Who may do what: each RPC's rule, as a pure function of the caller and the request. A
//! refusal is `PERMISSION_DENIED` with reason `NOT_PERMITTED` and a message naming the rule.
//!
//! | RPC                                   | allowed callers                                    |
//! |---------------------------------------|----------------------------------------------------|
//! | Registry.Enroll                       | registrar of the identity's home province          |
//! | Registry.Revoke / Suspend / Reinstate | authority; its scope is checked by `apply` against |
//! |                                       | the identity's home province (OUT_OF_SCOPE)        |
//! | Registry.GetRecord                    | registrar or authority of the home province;       |
//! |                                       | national authority                                 |
//! | Registry.BindHolderKey                | registrar or authority; scope checked by `apply`   |
//! | Holder (SetModalityLock, GetHistory)  | any caller relaying a request signed by the        |
//! |                                       | identity's bound device key (`security::holder`)   |
//! | Verifier.Verify                       | platform (its pseudonym sector is its own id)      |
//! | Cluster.Status                        | operator, node                                     |
//! | Cluster.AddLearner                    | operator; a node adding itself (joining)           |
//! | Cluster (everything else)             | operator                                           |
//! | Raft (peer port)                      | node                                               |
//!
//! On a plaintext node every caller is [`Caller::Unauthenticated`] and everything is allowed,
//! with the authority and platform a request declares.

use quorumid_proto::v1 as pb;
use tonic::{Code, Request, Status};

use super::Caller;
use crate::api::errors::with_reason;
use crate::api::validate;
use crate::raft::NodeId;
use crate::registry::{Authority, Scope};

fn denied(message: String) -> Status {
    with_reason(Code::PermissionDenied, "NOT_PERMITTED", message)
}

/// The caller the authentication layer attached to a request.
pub fn caller<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the request carries no authenticated caller"))
}

/// With a certificate, the acting authority is the certificate's registrar or authority; a
/// request may repeat it but not name another.
fn certified(caller: &Caller, declared: Option<&pb::Authority>) -> Result<Authority, Status> {
    let acting = match caller {
        Caller::Registrar { province, name } => Authority {
            id: name.clone(),
            scope: Scope::Province(province.clone()),
        },
        Caller::Authority { scope, name } => Authority {
            id: name.clone(),
            scope: scope.clone(),
        },
        other => {
            return Err(denied(format!(
                "{other} (role {}) acts for no office",
                other.role()
            )));
        }
    };
    if let Some(declared) = declared {
        let declared = validate::authority(Some(declared))?;
        if declared != acting {
            return Err(denied(format!(
                "the request names authority {:?} ({}), but the caller is {caller}",
                declared.id,
                scope_word(&declared.scope)
            )));
        }
    }
    Ok(acting)
}

fn scope_word(scope: &Scope) -> String {
    match scope {
        Scope::National => "national".to_string(),
        Scope::Province(p) => format!("province {p}"),
    }
}

/// Registry.Enroll: the authority recorded in the history.
pub fn enroll(
    caller: &Caller,
    home_province: &str,
    declared: Option<&pb::Authority>,
) -> Result<Authority, Status> {
    match caller {
        Caller::Unauthenticated => validate::authority(declared),
        Caller::Registrar { province, .. } if province == home_province => {
            certified(caller, declared)
        }
        Caller::Registrar { province, .. } => Err(denied(format!(
            "a registrar of province {province} cannot enroll an identity homed in \
             {home_province} (rule: registrars enroll in their own province)"
        ))),
        other => Err(denied(format!(
            "Enroll is for registrars; the caller is {other} (role {})",
            other.role()
        ))),
    }
}

/// Registry.Revoke, Suspend and Reinstate: the acting authority. Its scope against the
/// identity's home province is a rule of `apply` (the province is in the replicated state).
pub fn change_status(
    caller: &Caller,
    declared: Option<&pb::Authority>,
) -> Result<Authority, Status> {
    match caller {
        Caller::Unauthenticated => validate::authority(declared),
        Caller::Authority { .. } => certified(caller, declared),
        other => Err(denied(format!(
            "status changes are for authorities; the caller is {other} (role {})",
            other.role()
        ))),
    }
}

/// Registry.BindHolderKey: a registrar or an authority (after checking the holder in person),
/// acting as itself; its scope against the identity's province is a rule of `apply`.
pub fn bind_holder_key(
    caller: &Caller,
    declared: Option<&pb::Authority>,
) -> Result<Authority, Status> {
    match caller {
        Caller::Unauthenticated => validate::authority(declared),
        Caller::Registrar { .. } | Caller::Authority { .. } => certified(caller, declared),
        other => Err(denied(format!(
            "binding a holder key is for registrars and authorities; the caller is {other} \
             (role {})",
            other.role()
        ))),
    }
}

/// Registry.GetRecord, once the identity's home province is known.
pub fn read_record(caller: &Caller, home_province: &str) -> Result<(), Status> {
    let in_scope = |province: &str| province == home_province;
    match caller {
        Caller::Unauthenticated => Ok(()),
        Caller::Authority {
            scope: Scope::National,
            ..
        } => Ok(()),
        Caller::Authority {
            scope: Scope::Province(p),
            ..
        }
        | Caller::Registrar { province: p, .. }
            if in_scope(p) =>
        {
            Ok(())
        }
        Caller::Authority { .. } | Caller::Registrar { .. } => Err(denied(format!(
            "{caller} may read records of its own province only, and this identity is homed \
             in {home_province}"
        ))),
        other => Err(denied(format!(
            "records are for registrars and authorities; the caller is {other} (role {})",
            other.role()
        ))),
    }
}

/// Verifier.Verify: the platform, which is also the pseudonym sector. A request may repeat
/// the certificate's platform id but not name another.
pub fn verify(caller: &Caller, declared_platform: &str) -> Result<String, Status> {
    match caller {
        Caller::Unauthenticated => validate::token("platform_id", declared_platform),
        Caller::Platform { platform_id }
            if declared_platform.is_empty() || declared_platform == platform_id =>
        {
            Ok(platform_id.clone())
        }
        Caller::Platform { platform_id } => Err(denied(format!(
            "the request names platform {declared_platform:?}, but the caller is platform \
             {platform_id:?} (rule: a platform verifies in its own pseudonym sector)"
        ))),
        other => Err(denied(format!(
            "Verify is for platforms; the caller is {other} (role {})",
            other.role()
        ))),
    }
}

/// Cluster.Status.
pub fn cluster_status(caller: &Caller) -> Result<(), Status> {
    match caller {
        Caller::Unauthenticated | Caller::Operator { .. } | Caller::Node { .. } => Ok(()),
        other => Err(denied(format!(
            "the Cluster service is for operators; the caller is {other} (role {})",
            other.role()
        ))),
    }
}

/// Cluster.AddLearner: an operator, or a node asking to join as itself.
pub fn add_learner(caller: &Caller, learner: NodeId) -> Result<(), Status> {
    match caller {
        Caller::Unauthenticated | Caller::Operator { .. } => Ok(()),
        Caller::Node { node_id } if *node_id == learner => Ok(()),
        Caller::Node { node_id } => Err(denied(format!(
            "node {node_id} may add only itself as a learner, not node {learner}"
        ))),
        other => Err(denied(format!(
            "the Cluster service is for operators; the caller is {other} (role {})",
            other.role()
        ))),
    }
}

/// Cluster.ChangeMembership, TransferLeader and TriggerSnapshot.
pub fn cluster_admin(caller: &Caller, rpc: &str) -> Result<(), Status> {
    match caller {
        Caller::Unauthenticated | Caller::Operator { .. } => Ok(()),
        other => Err(denied(format!(
            "{rpc} is for operators; the caller is {other} (role {})",
            other.role()
        ))),
    }
}

/// Every call of the Raft service (peer port).
pub fn raft(caller: &Caller) -> Result<(), Status> {
    match caller {
        Caller::Unauthenticated | Caller::Node { .. } => Ok(()),
        other => Err(denied(format!(
            "the Raft service answers cluster nodes only; the caller is {other} (role {})",
            other.role()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registrar(p: &str) -> Caller {
        Caller::Registrar {
            province: p.into(),
            name: "clerk".into(),
        }
    }
    fn authority(p: &str) -> Caller {
        Caller::Authority {
            scope: Scope::Province(p.into()),
            name: "office".into(),
        }
    }
    fn national() -> Caller {
        Caller::Authority {
            scope: Scope::National,
            name: "ircc".into(),
        }
    }
    fn platform(id: &str) -> Caller {
        Caller::Platform {
            platform_id: id.into(),
        }
    }
    fn operator() -> Caller {
        Caller::Operator { name: "ops".into() }
    }
    fn node(id: NodeId) -> Caller {
        Caller::Node { node_id: id }
    }

    fn is_denied<T: std::fmt::Debug>(result: Result<T, Status>, expect: &str) {
        let status = result.expect_err("should be denied");
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
        assert!(status.message().contains(expect), "{}", status.message());
        assert_eq!(
            status.metadata().get("quorumid-reason").unwrap(),
            "NOT_PERMITTED"
        );
    }

    #[test]
    fn registrars_enroll_in_their_own_province_as_themselves() {
        let acting = enroll(&registrar("ON"), "ON", None).unwrap();
        assert_eq!(acting.id, "clerk");
        assert_eq!(acting.scope, Scope::Province("ON".into()));
        is_denied(enroll(&registrar("ON"), "QC", None), "own province");
        let other_name = pb::Authority {
            id: "someone-else".into(),
            province: "ON".into(),
            national: false,
        };
        is_denied(
            enroll(&registrar("ON"), "ON", Some(&other_name)),
            "names authority",
        );
        for caller in [
            authority("ON"),
            national(),
            platform("p"),
            operator(),
            node(1),
        ] {
            is_denied(enroll(&caller, "ON", None), "for registrars");
        }
    }

    #[test]
    fn only_authorities_change_status_and_act_as_their_certificate() {
        assert_eq!(
            change_status(&national(), None).unwrap().scope,
            Scope::National
        );
        let claimed_national = pb::Authority {
            id: "office".into(),
            province: String::new(),
            national: true,
        };
        is_denied(
            change_status(&authority("ON"), Some(&claimed_national)),
            "names authority",
        );
        for caller in [registrar("ON"), platform("p"), operator(), node(1)] {
            is_denied(change_status(&caller, None), "for authorities");
        }
    }

    #[test]
    fn records_are_read_within_scope() {
        read_record(&registrar("ON"), "ON").unwrap();
        read_record(&authority("ON"), "ON").unwrap();
        read_record(&national(), "QC").unwrap();
        is_denied(read_record(&authority("ON"), "QC"), "own province");
        is_denied(read_record(&registrar("ON"), "QC"), "own province");
        is_denied(
            read_record(&platform("p"), "ON"),
            "registrars and authorities",
        );
    }

    #[test]
    fn platforms_verify_in_their_own_sector_only() {
        assert_eq!(verify(&platform("bank"), "").unwrap(), "bank");
        assert_eq!(verify(&platform("bank"), "bank").unwrap(), "bank");
        is_denied(verify(&platform("bank"), "shop"), "own pseudonym sector");
        is_denied(verify(&authority("ON"), ""), "for platforms");
    }

    #[test]
    fn the_cluster_and_raft_services_are_for_operators_and_nodes() {
        cluster_status(&operator()).unwrap();
        cluster_status(&node(2)).unwrap();
        is_denied(cluster_status(&platform("p")), "for operators");
        add_learner(&node(4), 4).unwrap();
        is_denied(add_learner(&node(4), 5), "only itself");
        is_denied(cluster_admin(&node(4), "ChangeMembership"), "for operators");
        cluster_admin(&operator(), "ChangeMembership").unwrap();
        raft(&node(1)).unwrap();
        for caller in [operator(), platform("p"), national()] {
            is_denied(raft(&caller), "cluster nodes only");
        }
    }

    #[test]
    fn a_plaintext_node_takes_declared_identities() {
        let declared = pb::Authority {
            id: "x".into(),
            province: "ON".into(),
            national: false,
        };
        assert_eq!(
            change_status(&Caller::Unauthenticated, Some(&declared))
                .unwrap()
                .id,
            "x"
        );
        assert_eq!(verify(&Caller::Unauthenticated, "shop").unwrap(), "shop");
        assert!(verify(&Caller::Unauthenticated, "").is_err());
    }
}

//! Checks and limits on everything that comes from the network, turning protobuf messages
//! into domain values. Each failure names the field and what is wrong with it.

use std::time::Duration;

use quorumid_proto::v1 as pb;
use tonic::Status;

use super::errors::invalid;
use crate::biometrics::MAX_FACE_IMAGE_BYTES;
use crate::reads::Level;
use crate::registry::{Authority, IdentityId, Modality, Reason, Scope, Template, TemplateFormat};
use crate::security::holder;

pub const MAX_TEMPLATES: usize = 8;
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
pub const MAX_TOKEN_LEN: usize = 64;
pub const MAX_PROVINCE_LEN: usize = 16;
pub const MAX_DOCUMENT_LEN: usize = 64;
pub const MAX_BOUNDED_MS: u64 = 60_000;
pub const DEFAULT_BOUNDED_MS: u64 = 1_000;

/// An identifier such as a request id, platform id or authority id: 1..=64 of [A-Za-z0-9._:-].
pub fn token(field: &str, value: &str) -> Result<String, Status> {
    if value.is_empty() || value.len() > MAX_TOKEN_LEN {
        return Err(invalid(format!(
            "{field} must be 1 to {MAX_TOKEN_LEN} characters, got {}",
            value.len()
        )));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
    {
        return Err(invalid(format!(
            "{field} may only hold letters, digits and . _ : - (found {bad:?})"
        )));
    }
    Ok(value.to_string())
}

/// A province or issuer code: 1..=16 of [A-Z0-9-].
pub fn province(field: &str, value: &str) -> Result<String, Status> {
    let ok = !value.is_empty()
        && value.len() <= MAX_PROVINCE_LEN
        && value
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(invalid(format!(
            "{field} must be 1 to {MAX_PROVINCE_LEN} characters of A-Z, 0-9 and -"
        )));
    }
    Ok(value.to_string())
}

pub fn identity_id(field: &str, value: &str) -> Result<IdentityId, Status> {
    IdentityId::parse(value).map_err(|e| invalid(format!("{field}: {e}")))
}

/// A document number, normalised (spaces and hyphens dropped, upper case) so that the same
/// document written two ways is one document.
pub fn document_number(value: &str) -> Result<String, Status> {
    let normalised: String = value
        .chars()
        .filter(|c| !matches!(c, ' ' | '-'))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if normalised.is_empty() || normalised.len() > MAX_DOCUMENT_LEN {
        return Err(invalid(format!(
            "document_number must hold 1 to {MAX_DOCUMENT_LEN} characters besides spaces and hyphens"
        )));
    }
    if !normalised.chars().all(|c| c.is_ascii_graphic()) {
        return Err(invalid(
            "document_number may only hold printable ASCII characters",
        ));
    }
    Ok(normalised)
}

pub fn authority(value: Option<&pb::Authority>) -> Result<Authority, Status> {
    let a = value.ok_or_else(|| invalid("authority is required"))?;
    let id = token("authority.id", &a.id)?;
    let scope = if a.national {
        Scope::National
    } else {
        Scope::Province(province("authority.province", &a.province)?)
    };
    Ok(Authority { id, scope })
}

pub fn reason(value: i32) -> Result<Reason, Status> {
    use pb::ReasonCode as R;
    let code = R::try_from(value)
        .map_err(|_| invalid(format!("reason {value} is not a known ReasonCode")))?;
    Ok(match code {
        R::Unspecified => return Err(invalid("reason is required for a status change")),
        R::KeyCompromise => Reason::KeyCompromise,
        R::DocumentLost => Reason::DocumentLost,
        R::DocumentStolen => Reason::DocumentStolen,
        R::Deceased => Reason::Deceased,
        R::Fraud => Reason::Fraud,
        R::HolderRequest => Reason::HolderRequest,
        R::Superseded => Reason::Superseded,
        R::CourtOrder => Reason::CourtOrder,
        R::UnderInvestigation => Reason::UnderInvestigation,
        R::IssueResolved => Reason::IssueResolved,
    })
}

/// A template as a request carries it: ready to store or compare, or a face photograph the
/// node first turns into one (`Context::templates`).
pub enum TemplateInput {
    Ready(Template),
    FaceImage(Vec<u8>),
}

/// One template; `field` names it in errors (`templates[2]`, `probe`).
pub fn template(field: &str, t: &pb::Template) -> Result<TemplateInput, Status> {
    let format = match pb::TemplateFormat::try_from(t.format) {
        Ok(pb::TemplateFormat::FaceEmbeddingF32) => TemplateFormat::FaceEmbeddingF32,
        Ok(pb::TemplateFormat::Iso1979422005) => TemplateFormat::Iso19794_2_2005,
        Ok(pb::TemplateFormat::FaceImage) => {
            if !t.model_id.is_empty() {
                return Err(invalid(format!(
                    "{field}.model_id must be empty for a FACE_IMAGE (the node's model embeds it)"
                )));
            }
            if t.data.is_empty() || t.data.len() > MAX_FACE_IMAGE_BYTES {
                return Err(invalid(format!(
                    "{field}.data must be a face image of 1 to {MAX_FACE_IMAGE_BYTES} bytes, got {}",
                    t.data.len()
                )));
            }
            return Ok(TemplateInput::FaceImage(t.data.clone()));
        }
        Ok(pb::TemplateFormat::Unspecified) => {
            return Err(invalid(format!("{field}.format is required")));
        }
        Err(_) => {
            return Err(invalid(format!(
                "{field}.format {} is not a known TemplateFormat",
                t.format
            )));
        }
    };
    let model_id = token(&format!("{field}.model_id"), &t.model_id)?;
    if t.data.is_empty() || t.data.len() > MAX_TEMPLATE_BYTES {
        return Err(invalid(format!(
            "{field}.data must be 1 to {MAX_TEMPLATE_BYTES} bytes, got {}",
            t.data.len()
        )));
    }
    Ok(TemplateInput::Ready(Template {
        format,
        model_id,
        data: t.data.clone(),
    }))
}

pub fn templates(list: &[pb::Template]) -> Result<Vec<TemplateInput>, Status> {
    if list.len() > MAX_TEMPLATES {
        return Err(invalid(format!(
            "at most {MAX_TEMPLATES} templates per identity, got {}",
            list.len()
        )));
    }
    list.iter()
        .enumerate()
        .map(|(i, t)| template(&format!("templates[{i}]"), t))
        .collect()
}

pub fn consistency(value: Option<&pb::ReadConsistency>) -> Result<Level, Status> {
    use pb::ConsistencyLevel as C;
    let default = pb::ReadConsistency::default();
    let c = value.unwrap_or(&default);
    let level = C::try_from(c.level).map_err(|_| {
        invalid(format!(
            "consistency.level {} is not a known ConsistencyLevel",
            c.level
        ))
    })?;
    Ok(match level {
        C::Unspecified => Level::Bounded(Duration::from_millis(DEFAULT_BOUNDED_MS)),
        C::Linearizable => Level::Linearizable,
        C::Bounded => {
            let ms = match c.max_staleness_ms {
                0 => DEFAULT_BOUNDED_MS,
                ms if ms > MAX_BOUNDED_MS => {
                    return Err(invalid(format!(
                        "consistency.max_staleness_ms must be at most {MAX_BOUNDED_MS}, got {ms}"
                    )));
                }
                ms => ms,
            };
            Level::Bounded(Duration::from_millis(ms))
        }
        C::AtLeast => Level::AtLeast(c.min_index),
        C::Local => Level::Local,
    })
}

/// A holder's signed proof, checked for shape (its signature is checked against the bound
/// key once the identity is read).
pub struct HolderProof {
    pub at_unix_ms: u64,
    pub signature: Vec<u8>,
}

pub fn holder_proof(field: &str, value: Option<&pb::HolderProof>) -> Result<HolderProof, Status> {
    let p = value.ok_or_else(|| invalid(format!("{field} is required")))?;
    if p.signature.len() != 64 {
        return Err(invalid(format!(
            "{field}.signature must be 64 bytes (Ed25519), got {}",
            p.signature.len()
        )));
    }
    if p.at_unix_ms == 0 {
        return Err(invalid(format!("{field}.at_unix_ms is required")));
    }
    Ok(HolderProof {
        at_unix_ms: p.at_unix_ms,
        signature: p.signature.clone(),
    })
}

/// A platform's challenge to the holder: its nonce and the holder's proof.
pub fn holder_challenge(c: &pb::HolderChallenge) -> Result<(Vec<u8>, HolderProof), Status> {
    if !(holder::MIN_NONCE..=holder::MAX_NONCE).contains(&c.nonce.len()) {
        return Err(invalid(format!(
            "holder.nonce must be {} to {} bytes, got {}",
            holder::MIN_NONCE,
            holder::MAX_NONCE,
            c.nonce.len()
        )));
    }
    Ok((
        c.nonce.clone(),
        holder_proof("holder.proof", c.proof.as_ref())?,
    ))
}

pub fn modality(value: i32) -> Result<Modality, Status> {
    match pb::Modality::try_from(value) {
        Ok(pb::Modality::Face) => Ok(Modality::Face),
        Ok(pb::Modality::Fingerprint) => Ok(Modality::Fingerprint),
        _ => Err(invalid(format!(
            "modality {value} is not FACE (1) or FINGERPRINT (2)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_provinces_are_checked() {
        assert!(token("request_id", "req-1:a.b_c").is_ok());
        assert!(token("request_id", "").is_err());
        assert!(token("request_id", &"x".repeat(65)).is_err());
        assert!(token("request_id", "a b").is_err());
        assert!(province("home_province", "ON").is_ok());
        assert!(province("home_province", "on").is_err());
        assert!(province("home_province", "").is_err());
    }

    #[test]
    fn document_numbers_are_normalised() {
        assert_eq!(document_number("ab 123-456").unwrap(), "AB123456");
        assert!(document_number(" - ").is_err());
        assert!(document_number("ab\u{7}1").is_err());
    }

    #[test]
    fn consistency_levels_map_and_limits_hold() {
        assert_eq!(
            consistency(None).unwrap(),
            Level::Bounded(Duration::from_millis(1000))
        );
        let bounded = |ms| pb::ReadConsistency {
            level: pb::ConsistencyLevel::Bounded as i32,
            max_staleness_ms: ms,
            min_index: 0,
        };
        assert_eq!(
            consistency(Some(&bounded(250))).unwrap(),
            Level::Bounded(Duration::from_millis(250))
        );
        assert!(consistency(Some(&bounded(60_001))).is_err());
        let unknown = pb::ReadConsistency {
            level: 42,
            ..Default::default()
        };
        let err = consistency(Some(&unknown)).unwrap_err();
        assert!(err.message().contains("42"), "{}", err.message());
    }
}

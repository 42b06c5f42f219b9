//! No API returns a template or a document number (DESIGN.md 7), proven on the API contract
//! itself: every response message of every public service, followed through every nested
//! message type, is read from the compiled descriptors. A field that could carry a template
//! or a document number (the `Template` message, any `bytes` field, a field named for a
//! document number) fails the test. The same walk over the requests must find them, or the
//! walk proves nothing.

use std::collections::{BTreeSet, HashMap};

use prost::Message as _;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use quorumid_proto::v1 as pb;

const PUBLIC_SERVICES: [&str; 4] = ["Registry", "Verifier", "Holder", "Cluster"];

struct Contract {
    messages: HashMap<String, DescriptorProto>,
    /// (service, method, input type, output type)
    methods: Vec<(String, String, String, String)>,
}

fn contract() -> Contract {
    let set = FileDescriptorSet::decode(pb::FILE_DESCRIPTOR_SET).expect("descriptor set");
    let mut messages = HashMap::new();
    let mut methods = Vec::new();
    for file in &set.file {
        let package = file.package();
        fn collect(prefix: &str, m: &DescriptorProto, out: &mut HashMap<String, DescriptorProto>) {
            let name = format!("{prefix}.{}", m.name());
            for nested in &m.nested_type {
                collect(&name, nested, out);
            }
            out.insert(name, m.clone());
        }
        for m in &file.message_type {
            collect(&format!(".{package}"), m, &mut messages);
        }
        for service in &file.service {
            for method in &service.method {
                methods.push((
                    service.name().to_string(),
                    method.name().to_string(),
                    method.input_type().to_string(),
                    method.output_type().to_string(),
                ));
            }
        }
    }
    Contract { messages, methods }
}

/// Every field that could carry a template or a document number, reachable from `root`, as
/// `Message.field` paths.
fn sensitive_fields(contract: &Contract, root: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let message = &contract.messages[&name];
        for field in &message.field {
            let path = format!("{name}.{}", field.name());
            let lower = field.name().to_lowercase();
            if field.r#type() == Type::Bytes || lower.contains("document_number") {
                found.insert(path.clone());
            }
            if field.r#type() == Type::Message {
                if field.type_name() == ".quorumid.v1.Template" {
                    found.insert(path);
                }
                todo.push(field.type_name().to_string());
            }
        }
    }
    found
}

#[test]
fn no_public_response_can_carry_a_template_or_a_document_number() {
    let contract = contract();
    let public: Vec<_> = contract
        .methods
        .iter()
        .filter(|(service, ..)| PUBLIC_SERVICES.contains(&service.as_str()))
        .collect();
    // Every public method is covered (Registry 6, Verifier 1, Holder 3, Cluster 5).
    assert_eq!(public.len(), 15, "{public:?}");
    for (service, method, _, output) in &public {
        let found = sensitive_fields(&contract, output);
        assert!(
            found.is_empty(),
            "{service}.{method} answers with {output}, which can carry {found:?}"
        );
    }
    // The walk finds what requests carry: templates and document numbers go in.
    let enroll = public
        .iter()
        .find(|(_, method, ..)| method == "Enroll")
        .unwrap();
    let found = sensitive_fields(&contract, &enroll.2);
    assert!(
        found.contains(".quorumid.v1.EnrollRequest.templates"),
        "{found:?}"
    );
    assert!(
        found.contains(".quorumid.v1.EnrollRequest.document_number"),
        "{found:?}"
    );
    assert!(found.contains(".quorumid.v1.Template.data"), "{found:?}");
    let verify = public
        .iter()
        .find(|(_, method, ..)| method == "Verify")
        .unwrap();
    assert!(sensitive_fields(&contract, &verify.2).contains(".quorumid.v1.VerifyRequest.probe"));
}

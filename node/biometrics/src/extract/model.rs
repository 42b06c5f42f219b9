//! Reading the ONNX files into tract: a size-checked read, the recorded intermediate shapes
//! dropped (YuNet's file records them for 640x640; tract infers them for the size it is
//! given), and PRelu rewritten into operations tract runs fast.
//!
//! tract expands `PRelu(x, s)` into `x > 0 ? x : x * s` (a comparison and a select), which
//! it runs element by element: 27 of them took three quarters of SFace's time. The same
//! function as `Relu(x) + Min(x, 0) * s` becomes two fused chains of vectorised per-channel
//! operations. It is exact: one of the two terms is zero, and the other is `x` or `x * s`.

use std::path::Path;

use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};
use tract_onnx::prelude::*;

use super::ExtractError;

/// Largest model file read (SFace is 37 MiB).
const MAX_MODEL_BYTES: u64 = 256 << 20;
/// `TensorProto.DataType.FLOAT`.
const ONNX_FLOAT: i32 = 1;
const ZERO: &str = "quorumid.prelu.zero";

pub(crate) fn load(path: &Path) -> Result<InferenceModel, ExtractError> {
    let invalid = |reason: String| ExtractError::InvalidModel {
        path: path.to_path_buf(),
        reason,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ExtractError::ModelMissing {
                path: path.to_path_buf(),
            });
        }
        Err(e) => return Err(invalid(e.to_string())),
    };
    if !meta.is_file() || meta.len() > MAX_MODEL_BYTES {
        return Err(invalid(format!(
            "not a file of at most {MAX_MODEL_BYTES} bytes"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
    let onnx = tract_onnx::onnx()
        .with_ignore_value_info(true)
        .with_ignore_output_shapes(true);
    let mut proto = onnx
        .proto_model_for_read(&mut bytes.as_slice())
        .map_err(|e| invalid(format!("{e:#}")))?;
    rewrite_prelu(&mut proto);
    onnx.model_for_proto_model(&proto)
        .map_err(|e| invalid(format!("{e:#}")))
}

fn node(op: &str, inputs: &[&str], output: String) -> NodeProto {
    NodeProto {
        name: output.clone(),
        op_type: op.to_string(),
        input: inputs.iter().map(|i| i.to_string()).collect(),
        output: vec![output],
        ..Default::default()
    }
}

/// Replaces every `PRelu(x, s)` of the main graph by `Relu(x) + Min(x, 0) * s`.
fn rewrite_prelu(proto: &mut ModelProto) {
    let Some(graph) = proto.graph.as_mut() else {
        return;
    };
    if !graph.node.iter().any(|n| n.op_type == "PRelu") {
        return;
    }
    graph.initializer.push(TensorProto {
        name: ZERO.to_string(),
        data_type: ONNX_FLOAT,
        float_data: vec![0.0],
        ..Default::default()
    });
    let nodes = std::mem::take(&mut graph.node);
    for (i, n) in nodes.into_iter().enumerate() {
        if n.op_type != "PRelu" || n.input.len() != 2 || n.output.len() != 1 {
            graph.node.push(n);
            continue;
        }
        let (x, slope, y) = (n.input[0].as_str(), n.input[1].as_str(), &n.output[0]);
        let name = |part: &str| format!("quorumid.prelu.{i}.{part}");
        let (positive, negative, scaled) = (name("relu"), name("min"), name("mul"));
        graph.node.extend([
            node("Relu", &[x], positive.clone()),
            node("Min", &[x, ZERO], negative.clone()),
            node("Mul", &[&negative, slope], scaled.clone()),
            NodeProto {
                name: name("add"),
                op_type: "Add".to_string(),
                input: vec![positive, scaled],
                output: vec![y.clone()],
                ..Default::default()
            },
        ]);
    }
}

#!/usr/bin/env python3
"""Verify a quorumid identity from Python, with stubs generated from proto/.

    pip install grpcio grpcio-tools
    python verify.py --node 127.0.0.1:7101 --node 127.0.0.1:7102 --platform acme IDENTITY_ID

Asks the nodes in order and moves to the next one when a node answers UNAVAILABLE (it is
stale, knows no leader, or is down), as the Rust client library does. Prints the answer as
JSON; exits 0 when the identity is ACTIVE, 3 when it is not, 5 when no node could answer.
"""

import argparse
import json
import pathlib
import sys
import tempfile

import grpc
from grpc_tools import protoc

PROTO_ROOT = pathlib.Path(__file__).resolve().parents[3] / "proto"


def generate_stubs() -> None:
    """Compiles proto/quorumid/v1/registry.proto into a temporary package on sys.path."""
    out = tempfile.mkdtemp(prefix="quorumid-stubs-")
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    code = protoc.main([
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        str(PROTO_ROOT / "quorumid" / "v1" / "registry.proto"),
    ])
    if code != 0:
        sys.exit(f"protoc failed ({code}) on {PROTO_ROOT}")
    sys.path.insert(0, out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("identity_id")
    parser.add_argument("--node", action="append", required=True, help="host:port, repeatable")
    parser.add_argument("--platform", default="python-example")
    parser.add_argument("--level", default="BOUNDED",
                        choices=["LINEARIZABLE", "BOUNDED", "AT_LEAST", "LOCAL"])
    parser.add_argument("--min-index", type=int, default=0, help="AT_LEAST: a write's commit token")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds per node")
    args = parser.parse_args()

    generate_stubs()
    from quorumid.v1 import registry_pb2 as pb
    from quorumid.v1 import registry_pb2_grpc as rpc

    request = pb.VerifyRequest(
        identity_id=args.identity_id,
        platform_id=args.platform,
        consistency=pb.ReadConsistency(
            level=pb.ConsistencyLevel.Value(f"CONSISTENCY_LEVEL_{args.level}"),
            min_index=args.min_index,
        ),
    )
    failures = []
    for node in args.node:
        with grpc.insecure_channel(node) as channel:
            try:
                answer = rpc.VerifierStub(channel).Verify(request, timeout=args.timeout)
            except grpc.RpcError as e:
                trailers = dict(e.trailing_metadata() or ())
                reason = trailers.get("quorumid-reason", "")
                if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    failures.append(f"{node}: {e.code().name} {reason} {e.details()}")
                    continue  # another node may answer
                print(json.dumps({"error": e.details(), "code": e.code().name, "reason": reason}))
                return 2 if e.code() == grpc.StatusCode.INVALID_ARGUMENT else 1
        status = pb.IdentityStatus.Name(answer.status).removeprefix("IDENTITY_STATUS_")
        print(json.dumps({
            "status": status,
            "pseudonym": answer.pseudonym,
            "node_id": answer.facts.node_id,
            "applied_index": answer.facts.applied_index,
            "staleness_bound_ms": answer.facts.staleness_bound_ms
            if answer.facts.HasField("staleness_bound_ms") else None,
        }))
        return 0 if status == "ACTIVE" else 3
    print(json.dumps({"error": "no node could answer", "tried": failures}))
    return 5


if __name__ == "__main__":
    sys.exit(main())

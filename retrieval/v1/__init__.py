"""Generated gRPC stubs of protos/retrieval/v1 (scripts/gen_protos.sh)."""

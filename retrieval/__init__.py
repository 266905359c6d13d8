"""Generated gRPC stubs of protos/retrieval (scripts/gen_protos.sh)."""

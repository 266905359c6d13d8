"""The gRPC gateway: validation, inference backends, fusion, typed filters, Milvus store, metrics."""

"""Search quality: metrics, data adapters, contrastive fine-tuning and the evaluation harness (issue 7)."""

"""The gateway's one typed settings object: defaults < environment (MM_*) < command-line flags."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


# Bytes of one UpsertResult without caption and tags (id <= 128 characters of up to 4 bytes, index,
# status, reason <= 150 characters, field tags): the upsert response budget rests on it (gateway/ingest.py).
UPSERT_RESULT_MAX_BYTES = 1_200


class Weights(BaseModel):
    """Channel weights (gateway/fusion.py): normalized to sum 1 wherever they are used; a channel
    not named is 0."""

    model_config = {"extra": "forbid"}

    image: float = Field(0.0, ge=0)
    title: float = Field(0.0, ge=0)
    caption: float = Field(0.0, ge=0)
    keyword: float = Field(0.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        """Also accept "image=0.5,title=0.3" (flags and environment)."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("{"):
                return json.loads(text)
            out = {}
            for part in filter(None, (p.strip() for p in text.split(","))):
                name, _, number = part.partition("=")
                if not number:
                    raise ValueError(f"weights {value!r}: write channel=number pairs, e.g. image=0.5,title=0.3")
                out[name.strip()] = float(number)
            return out
        return value

    @model_validator(mode="after")
    def _not_all_zero(self) -> "Weights":
        if self.image + self.title + self.caption + self.keyword <= 0:
            raise ValueError("at least one channel weight must be > 0")
        return self

    def as_dict(self) -> dict[str, float]:
        return {"image": self.image, "title": self.title, "caption": self.caption, "keyword": self.keyword}


QUERY_TYPES = ("text", "image", "composed")


class Settings(BaseSettings):
    """Every knob of the gateway. Environment: MM_<FIELD> (nested: MM_WEIGHTS__IMAGE=0.6)."""

    model_config = SettingsConfigDict(env_prefix="MM_", env_nested_delimiter="__", extra="ignore")

    # network
    host: str = "127.0.0.1"
    port: int = Field(50051, ge=0, le=65535)
    metrics_port: int = Field(9464, ge=0, le=65535, description="Prometheus /metrics; 0 = off")
    max_message_bytes: int = 32 * 1024 * 1024
    grace_seconds: float = 5.0

    # inference
    backend: Literal["local", "triton"] = "local"
    model_repository: Path = Path("model_repository")
    model_variant: Literal["fp32", "int8", "int8_static", "fp16"] = Field(
        "fp32", description="CLIP graph: fp32, int8 (dynamic), int8_static (calibrated QDQ), fp16 (GPU); see docs/benchmarks.md"
    )
    engine: Literal["auto", "onnxruntime", "openvino", "openvino-bf16"] = Field(
        "auto",
        description="local backend: engine running the CLIP graphs; auto = openvino-bf16 on CPUs with native bf16 (AMX / AVX-512 BF16) "
        "when openvino is installed, else onnxruntime (runtime/sessions.py; measured in docs/benchmarks.md)",
    )
    triton_url: str = "127.0.0.1:8001"
    inference_timeout_s: float = 30.0
    inference_threads: int = Field(2, ge=1, description="local backend: worker threads running ONNX Runtime")
    caption: bool = True
    tags: bool = Field(True, description="interrogator tags on ingest (caption channel and tag filters)")
    tags_per_facet: int = Field(2, ge=1, description="at most this many tags per facet (each must reach the facet's min_probability)")

    # batching (local backend: cross-request micro-batching, see gateway/batching.py)
    batch_max_size: int = Field(32, ge=1, le=1024, description="local backend: most items in one ONNX Runtime call; 1 = no cross-request batching")
    batch_max_delay_ms: float = Field(
        2.0, ge=0, le=1000, description="local backend: longest a request waits for others to join its batch while the model is idle"
    )
    preprocess_threads: int = Field(2, ge=1, description="local backend: threads decoding images and tokenizing texts")

    # store
    store_uri: str = "data/products.db"
    store_token: str = ""
    collection: str = "products"
    store_timeout_s: float = 10.0
    store_load_timeout_s: float = Field(600.0, gt=0, description="loading the collection at start (100k products: 10-35 s here)")
    store_concurrency: int = Field(2, ge=1, le=8, description="upsert batches in flight to the store per stream")
    index_type: Literal["AUTOINDEX", "IVF_FLAT", "FLAT", "HNSW"] = "IVF_FLAT"
    nlist: int = 1024
    nprobe: int = 32
    multi_vector_candidates: int = Field(
        # 300: the quality harness' gateway agrees with its exhaustive reference within 0.001 P@10 in every mode
        # (100 left 0.0067 on composed queries); 100k store: multi_vector p50 +7-13% (docs/quality.md, docs/gateway.md)
        300, ge=1, le=16384, description="candidates per channel (and for the keyword channel) that exact rescoring considers"
    )
    filtered_limit: int = Field(
        4000, ge=1, le=16384, description="candidates a selective filtered search asks the index for (recall vs latency, see docs)"
    )
    overfetch_below: float = Field(0.2, ge=0, le=1, description="a filter matching less than this share of the catalog over-fetches")
    count_cache_s: float = Field(30.0, ge=0, description="how long a filter's match count is reused")

    # search / fusion (gateway/fusion.py). Defaults: what the quality harness chose on its validation
    # split (docs/quality.md): text and image queries rank by the image channel alone, composed
    # queries by title 0.3 + caption/tags 0.7; the fused vector is built with `weights`.
    weights: Weights = Weights(image=1.0)  # the stored fused vectors' weights (dense part) and every query type's fallback
    text_query_weights: Annotated[Weights | None, NoDecode] = None
    image_query_weights: Annotated[Weights | None, NoDecode] = None
    composed_query_weights: Annotated[Weights | None, NoDecode] = Weights(title=0.3, caption=0.7)
    rrf_k: int = Field(60, ge=1)
    # keyword score = bm25^e / (bm25^e + pivot^e) (gateway/fusion.py); chosen on the quality harness' validation
    # split together with the hybrid's keyword weight (docs/quality.md, "Issue 13"). BM25 grows with log(catalog
    # size) for rare terms: re-tune the pivot for a catalog far from that split's 3,000 products.
    keyword_pivot: float = Field(14.0, gt=0, description="BM25 score at which the keyword channel scores 0.5")
    keyword_exponent: float = Field(8.0, gt=0, description="steepness of the keyword score around the pivot")
    text_weight: float = Field(0.5, ge=0, le=1, description="composed queries: share of the text modifier")
    filterable_attributes: Annotated[list[str], NoDecode] = ["size", "colour", "color", "material", "gender", "season"]

    # limits
    top_k_default: int = Field(10, ge=1)
    top_k_max: int = Field(100, ge=1)
    max_image_bytes: int = 10 * 1024 * 1024
    max_text_chars: int = 2000
    max_batch: int = Field(32, ge=1, description="upsert items embedded together")
    max_ids: int = 1000
    max_filter_values: int = 100

    # health
    probe_interval_s: float = 2.0

    # security (docs/security.md) -------------------------------------------------------------
    api_keys_file: Path | None = Field(None, description="API keys, one 'name scopes key' per line (docs/security.md); with keys set, writes need a key")
    api_keys: SecretStr = Field(SecretStr(""), description="API keys inline, entries separated by ';' (same format as the file)")
    require_read_key: bool = Field(False, description="reads (Search, Get, Describe, Embed) need a read key too")
    tls_cert: Path | None = Field(None, description="PEM certificate chain: serve TLS (with tls_key)")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    tls_client_ca: Path | None = Field(None, description="PEM CA: require client certificates it signed (mutual TLS)")
    reflection: bool = Field(False, description="serve gRPC reflection (needs an admin key when keys are set)")
    max_concurrent_rpcs: int = Field(256, ge=0, description="calls in progress at once; more get RESOURCE_EXHAUSTED (0 = no cap)")
    max_deadline_s: float = Field(60.0, gt=0, description="longest a unary call may run, whatever deadline the client set")
    max_stream_s: float = Field(1800.0, gt=0, description="longest an UpsertProducts stream may run")
    rate_limit_rps: float = Field(0.0, ge=0, description="calls per second per API key (or per client address without a key); 0 = off")
    rate_limit_burst: int = Field(50, ge=1, description="token-bucket size of the rate limit")
    max_upsert_items: int = Field(20_000, ge=1, description="items per UpsertProducts stream; more end the stream with RESOURCE_EXHAUSTED")

    @field_validator("text_query_weights", "image_query_weights", "composed_query_weights", mode="before")
    @classmethod
    def _unset(cls, value: Any) -> Any:
        """"" (or "default") = no weights of its own: the query type uses `weights`."""
        if isinstance(value, str) and value.strip().lower() in ("", "default", "none"):
            return None
        return value

    @field_validator("filterable_attributes", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    def query_weights(self, query_type: str) -> dict[str, float]:
        """Default weights of a query type (text, image, composed): its own, else `weights`."""
        own = getattr(self, f"{query_type}_query_weights")
        return (own or self.weights).as_dict()

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.weights.image + self.weights.title + self.weights.caption <= 0:
            raise ValueError("weights: the fused vector needs a dense channel (image, title or caption) with weight > 0")
        if self.top_k_default > self.top_k_max:
            raise ValueError(f"top_k_default {self.top_k_default} > top_k_max {self.top_k_max}")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both or neither")
        if self.max_upsert_items * UPSERT_RESULT_MAX_BYTES > self.max_message_bytes * 3 // 4:
            raise ValueError(
                f"max_upsert_items {self.max_upsert_items} is too large for max_message_bytes {self.max_message_bytes}: "
                f"the upsert response would not fit (at most {self.max_message_bytes * 3 // 4 // UPSERT_RESULT_MAX_BYTES})"
            )
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca (mutual TLS) needs tls_cert and tls_key")
        return self


# Flags: one per field, dashes for underscores; nested weights as --weight-image etc.
_FLAT_FIELDS = [name for name in Settings.model_fields if name != "weights"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway",
        description="Multi-modal product search gateway (gRPC). Every flag also reads MM_<NAME> from the environment.",
    )
    for name in _FLAT_FIELDS:
        field = Settings.model_fields[name]
        help_text = field.description or f"default: {field.default}"
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None, help=f"{help_text} (env MM_{name.upper()})")
    for channel in Weights.model_fields:
        parser.add_argument(f"--weight-{channel}", dest=f"weight_{channel}", type=float, default=None, help=f"env MM_WEIGHTS__{channel.upper()}")
    return parser


def load_settings(argv: Sequence[str] | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, then flags in `argv`, then keyword overrides (tests)."""
    args = vars(build_parser().parse_args(list(argv) if argv is not None else []))
    base = Settings()
    values: dict[str, Any] = {k: v for k, v in args.items() if v is not None and not k.startswith("weight_")}
    weights = base.weights.as_dict()
    weights.update({k[len("weight_"):]: v for k, v in args.items() if k.startswith("weight_") and v is not None})
    merged = {**base.model_dump(), **values, "weights": weights, **overrides}
    return Settings.model_validate(merged)

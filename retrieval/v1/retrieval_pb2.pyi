from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SearchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEARCH_MODE_UNSPECIFIED: _ClassVar[SearchMode]
    SEARCH_MODE_FUSED: _ClassVar[SearchMode]
    SEARCH_MODE_MULTI_VECTOR: _ClassVar[SearchMode]

class Combine(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMBINE_UNSPECIFIED: _ClassVar[Combine]
    COMBINE_WEIGHTED: _ClassVar[Combine]
    COMBINE_RRF: _ClassVar[Combine]

class ItemStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_STATUS_UNSPECIFIED: _ClassVar[ItemStatus]
    ITEM_STATUS_OK: _ClassVar[ItemStatus]
    ITEM_STATUS_INVALID: _ClassVar[ItemStatus]
    ITEM_STATUS_FAILED: _ClassVar[ItemStatus]
SEARCH_MODE_UNSPECIFIED: SearchMode
SEARCH_MODE_FUSED: SearchMode
SEARCH_MODE_MULTI_VECTOR: SearchMode
COMBINE_UNSPECIFIED: Combine
COMBINE_WEIGHTED: Combine
COMBINE_RRF: Combine
ITEM_STATUS_UNSPECIFIED: ItemStatus
ITEM_STATUS_OK: ItemStatus
ITEM_STATUS_INVALID: ItemStatus
ITEM_STATUS_FAILED: ItemStatus

class Product(_message.Message):
    __slots__ = ("id", "image", "title", "description", "price", "category", "brand", "attributes", "in_stock", "tags", "image_uri")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URI_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: bytes
    title: str
    description: str
    price: float
    category: str
    brand: str
    attributes: _containers.ScalarMap[str, str]
    in_stock: bool
    tags: _containers.RepeatedScalarFieldContainer[str]
    image_uri: str
    def __init__(self, id: _Optional[str] = ..., image: _Optional[bytes] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., price: _Optional[float] = ..., category: _Optional[str] = ..., brand: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., in_stock: _Optional[bool] = ..., tags: _Optional[_Iterable[str]] = ..., image_uri: _Optional[str] = ...) -> None: ...

class ProductRecord(_message.Message):
    __slots__ = ("id", "title", "description", "price", "category", "brand", "attributes", "in_stock", "tags", "caption", "image_uri")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    BRAND_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URI_FIELD_NUMBER: _ClassVar[int]
    id: str
    title: str
    description: str
    price: float
    category: str
    brand: str
    attributes: _containers.ScalarMap[str, str]
    in_stock: bool
    tags: _containers.RepeatedScalarFieldContainer[str]
    caption: str
    image_uri: str
    def __init__(self, id: _Optional[str] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., price: _Optional[float] = ..., category: _Optional[str] = ..., brand: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., in_stock: _Optional[bool] = ..., tags: _Optional[_Iterable[str]] = ..., caption: _Optional[str] = ..., image_uri: _Optional[str] = ...) -> None: ...

class ChannelWeights(_message.Message):
    __slots__ = ("image", "title", "caption", "keyword")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    image: float
    title: float
    caption: float
    keyword: float
    def __init__(self, image: _Optional[float] = ..., title: _Optional[float] = ..., caption: _Optional[float] = ..., keyword: _Optional[float] = ...) -> None: ...

class AttributeFilter(_message.Message):
    __slots__ = ("key", "values")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    key: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class Filters(_message.Message):
    __slots__ = ("categories", "brands", "min_price", "max_price", "tags_any", "tags_all", "in_stock", "ids", "attributes")
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    BRANDS_FIELD_NUMBER: _ClassVar[int]
    MIN_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_FIELD_NUMBER: _ClassVar[int]
    TAGS_ANY_FIELD_NUMBER: _ClassVar[int]
    TAGS_ALL_FIELD_NUMBER: _ClassVar[int]
    IN_STOCK_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedScalarFieldContainer[str]
    brands: _containers.RepeatedScalarFieldContainer[str]
    min_price: float
    max_price: float
    tags_any: _containers.RepeatedScalarFieldContainer[str]
    tags_all: _containers.RepeatedScalarFieldContainer[str]
    in_stock: bool
    ids: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.RepeatedCompositeFieldContainer[AttributeFilter]
    def __init__(self, categories: _Optional[_Iterable[str]] = ..., brands: _Optional[_Iterable[str]] = ..., min_price: _Optional[float] = ..., max_price: _Optional[float] = ..., tags_any: _Optional[_Iterable[str]] = ..., tags_all: _Optional[_Iterable[str]] = ..., in_stock: _Optional[bool] = ..., ids: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Iterable[_Union[AttributeFilter, _Mapping]]] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("text", "image", "top_k", "weights", "filters", "mode", "combine", "rerank", "text_weight", "rrf_k")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    COMBINE_FIELD_NUMBER: _ClassVar[int]
    RERANK_FIELD_NUMBER: _ClassVar[int]
    TEXT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    RRF_K_FIELD_NUMBER: _ClassVar[int]
    text: str
    image: bytes
    top_k: int
    weights: ChannelWeights
    filters: Filters
    mode: SearchMode
    combine: Combine
    rerank: bool
    text_weight: float
    rrf_k: int
    def __init__(self, text: _Optional[str] = ..., image: _Optional[bytes] = ..., top_k: _Optional[int] = ..., weights: _Optional[_Union[ChannelWeights, _Mapping]] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., mode: _Optional[_Union[SearchMode, str]] = ..., combine: _Optional[_Union[Combine, str]] = ..., rerank: _Optional[bool] = ..., text_weight: _Optional[float] = ..., rrf_k: _Optional[int] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("product", "score", "channel_scores", "rerank_score")
    class ChannelScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_SCORES_FIELD_NUMBER: _ClassVar[int]
    RERANK_SCORE_FIELD_NUMBER: _ClassVar[int]
    product: ProductRecord
    score: float
    channel_scores: _containers.ScalarMap[str, float]
    rerank_score: float
    def __init__(self, product: _Optional[_Union[ProductRecord, _Mapping]] = ..., score: _Optional[float] = ..., channel_scores: _Optional[_Mapping[str, float]] = ..., rerank_score: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "mode", "weights", "timings", "combine", "query_type")
    HITS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    COMBINE_FIELD_NUMBER: _ClassVar[int]
    QUERY_TYPE_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    mode: SearchMode
    weights: ChannelWeights
    timings: Timings
    combine: Combine
    query_type: str
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., mode: _Optional[_Union[SearchMode, str]] = ..., weights: _Optional[_Union[ChannelWeights, _Mapping]] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., combine: _Optional[_Union[Combine, str]] = ..., query_type: _Optional[str] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("preprocess_ms", "inference_ms", "store_ms", "total_ms")
    PREPROCESS_MS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    STORE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    preprocess_ms: float
    inference_ms: float
    store_ms: float
    total_ms: float
    def __init__(self, preprocess_ms: _Optional[float] = ..., inference_ms: _Optional[float] = ..., store_ms: _Optional[float] = ..., total_ms: _Optional[float] = ...) -> None: ...

class UpsertProductsRequest(_message.Message):
    __slots__ = ("product",)
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    product: Product
    def __init__(self, product: _Optional[_Union[Product, _Mapping]] = ...) -> None: ...

class UpsertResult(_message.Message):
    __slots__ = ("id", "status", "reason", "caption", "tags", "index")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: ItemStatus
    reason: str
    caption: str
    tags: _containers.RepeatedScalarFieldContainer[str]
    index: int
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[ItemStatus, str]] = ..., reason: _Optional[str] = ..., caption: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., index: _Optional[int] = ...) -> None: ...

class UpsertProductsResponse(_message.Message):
    __slots__ = ("results", "ok", "invalid", "failed", "details_omitted")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    INVALID_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    DETAILS_OMITTED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[UpsertResult]
    ok: int
    invalid: int
    failed: int
    details_omitted: int
    def __init__(self, results: _Optional[_Iterable[_Union[UpsertResult, _Mapping]]] = ..., ok: _Optional[int] = ..., invalid: _Optional[int] = ..., failed: _Optional[int] = ..., details_omitted: _Optional[int] = ...) -> None: ...

class GetProductsRequest(_message.Message):
    __slots__ = ("ids", "include_vectors")
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_vectors: bool
    def __init__(self, ids: _Optional[_Iterable[str]] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class ProductVectors(_message.Message):
    __slots__ = ("image", "title", "caption", "fused")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    FUSED_FIELD_NUMBER: _ClassVar[int]
    image: _containers.RepeatedScalarFieldContainer[float]
    title: _containers.RepeatedScalarFieldContainer[float]
    caption: _containers.RepeatedScalarFieldContainer[float]
    fused: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, image: _Optional[_Iterable[float]] = ..., title: _Optional[_Iterable[float]] = ..., caption: _Optional[_Iterable[float]] = ..., fused: _Optional[_Iterable[float]] = ...) -> None: ...

class StoredProduct(_message.Message):
    __slots__ = ("product", "vectors")
    PRODUCT_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    product: ProductRecord
    vectors: ProductVectors
    def __init__(self, product: _Optional[_Union[ProductRecord, _Mapping]] = ..., vectors: _Optional[_Union[ProductVectors, _Mapping]] = ...) -> None: ...

class GetProductsResponse(_message.Message):
    __slots__ = ("products", "not_found")
    PRODUCTS_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    products: _containers.RepeatedCompositeFieldContainer[StoredProduct]
    not_found: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, products: _Optional[_Iterable[_Union[StoredProduct, _Mapping]]] = ..., not_found: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteProductsRequest(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteProductsResponse(_message.Message):
    __slots__ = ("deleted", "not_found")
    DELETED_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    not_found: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, deleted: _Optional[int] = ..., not_found: _Optional[_Iterable[str]] = ...) -> None: ...

class DescribeRequest(_message.Message):
    __slots__ = ("image", "max_tags")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_TAGS_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    max_tags: int
    def __init__(self, image: _Optional[bytes] = ..., max_tags: _Optional[int] = ...) -> None: ...

class Tag(_message.Message):
    __slots__ = ("term", "facet", "score")
    TERM_FIELD_NUMBER: _ClassVar[int]
    FACET_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    term: str
    facet: str
    score: float
    def __init__(self, term: _Optional[str] = ..., facet: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class DescribeResponse(_message.Message):
    __slots__ = ("caption", "tags")
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    caption: str
    tags: _containers.RepeatedCompositeFieldContainer[Tag]
    def __init__(self, caption: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("texts", "images")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("text_vectors", "image_vectors", "dim", "model")
    TEXT_VECTORS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    text_vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    image_vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    dim: int
    model: str
    def __init__(self, text_vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., image_vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., dim: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

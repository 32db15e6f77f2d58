from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackEvent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FEEDBACK_EVENT_UNSPECIFIED: _ClassVar[FeedbackEvent]
    FEEDBACK_EVENT_CLICK: _ClassVar[FeedbackEvent]
    FEEDBACK_EVENT_DWELL: _ClassVar[FeedbackEvent]
    FEEDBACK_EVENT_SKIP: _ClassVar[FeedbackEvent]
FEEDBACK_EVENT_UNSPECIFIED: FeedbackEvent
FEEDBACK_EVENT_CLICK: FeedbackEvent
FEEDBACK_EVENT_DWELL: FeedbackEvent
FEEDBACK_EVENT_SKIP: FeedbackEvent

class SearchRequest(_message.Message):
    __slots__ = ("scene", "text", "image", "similar_to", "top_k", "user_id", "diversify", "force_arms", "filters", "page_size", "page_token", "facets", "sort", "collapse", "highlight")
    class ForceArmsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SCENE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SIMILAR_TO_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DIVERSIFY_FIELD_NUMBER: _ClassVar[int]
    FORCE_ARMS_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FACETS_FIELD_NUMBER: _ClassVar[int]
    SORT_FIELD_NUMBER: _ClassVar[int]
    COLLAPSE_FIELD_NUMBER: _ClassVar[int]
    HIGHLIGHT_FIELD_NUMBER: _ClassVar[int]
    scene: str
    text: str
    image: bytes
    similar_to: int
    top_k: int
    user_id: str
    diversify: bool
    force_arms: _containers.ScalarMap[str, str]
    filters: _containers.RepeatedCompositeFieldContainer[Filter]
    page_size: int
    page_token: str
    facets: _containers.RepeatedScalarFieldContainer[str]
    sort: str
    collapse: str
    highlight: bool
    def __init__(self, scene: _Optional[str] = ..., text: _Optional[str] = ..., image: _Optional[bytes] = ..., similar_to: _Optional[int] = ..., top_k: _Optional[int] = ..., user_id: _Optional[str] = ..., diversify: _Optional[bool] = ..., force_arms: _Optional[_Mapping[str, str]] = ..., filters: _Optional[_Iterable[_Union[Filter, _Mapping]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., facets: _Optional[_Iterable[str]] = ..., sort: _Optional[str] = ..., collapse: _Optional[str] = ..., highlight: _Optional[bool] = ...) -> None: ...

class FilterValue(_message.Message):
    __slots__ = ("text", "number", "flag")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    text: str
    number: float
    flag: bool
    def __init__(self, text: _Optional[str] = ..., number: _Optional[float] = ..., flag: _Optional[bool] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("field", "op", "values", "min", "max")
    class Op(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OP_UNSPECIFIED: _ClassVar[Filter.Op]
        EQ: _ClassVar[Filter.Op]
        IN: _ClassVar[Filter.Op]
        RANGE: _ClassVar[Filter.Op]
        NOT: _ClassVar[Filter.Op]
    OP_UNSPECIFIED: Filter.Op
    EQ: Filter.Op
    IN: Filter.Op
    RANGE: Filter.Op
    NOT: Filter.Op
    FIELD_FIELD_NUMBER: _ClassVar[int]
    OP_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    field: str
    op: Filter.Op
    values: _containers.RepeatedCompositeFieldContainer[FilterValue]
    min: float
    max: float
    def __init__(self, field: _Optional[str] = ..., op: _Optional[_Union[Filter.Op, str]] = ..., values: _Optional[_Iterable[_Union[FilterValue, _Mapping]]] = ..., min: _Optional[float] = ..., max: _Optional[float] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "score", "retrieval_score", "summary", "found_by", "folded", "highlights")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    FOUND_BY_FIELD_NUMBER: _ClassVar[int]
    FOLDED_FIELD_NUMBER: _ClassVar[int]
    HIGHLIGHTS_FIELD_NUMBER: _ClassVar[int]
    id: int
    score: float
    retrieval_score: float
    summary: _struct_pb2.Struct
    found_by: _containers.RepeatedCompositeFieldContainer[Retrieval]
    folded: int
    highlights: _containers.RepeatedCompositeFieldContainer[Highlight]
    def __init__(self, id: _Optional[int] = ..., score: _Optional[float] = ..., retrieval_score: _Optional[float] = ..., summary: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., found_by: _Optional[_Iterable[_Union[Retrieval, _Mapping]]] = ..., folded: _Optional[int] = ..., highlights: _Optional[_Iterable[_Union[Highlight, _Mapping]]] = ...) -> None: ...

class Highlight(_message.Message):
    __slots__ = ("field", "kind", "spans")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    field: str
    kind: str
    spans: _containers.RepeatedCompositeFieldContainer[Span]
    def __init__(self, field: _Optional[str] = ..., kind: _Optional[str] = ..., spans: _Optional[_Iterable[_Union[Span, _Mapping]]] = ...) -> None: ...

class Span(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Retrieval(_message.Message):
    __slots__ = ("retriever", "rank", "score")
    RETRIEVER_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    retriever: str
    rank: int
    score: float
    def __init__(self, retriever: _Optional[str] = ..., rank: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class Facet(_message.Message):
    __slots__ = ("field", "counts", "candidates")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    field: str
    counts: _containers.RepeatedCompositeFieldContainer[FacetCount]
    candidates: int
    def __init__(self, field: _Optional[str] = ..., counts: _Optional[_Iterable[_Union[FacetCount, _Mapping]]] = ..., candidates: _Optional[int] = ...) -> None: ...

class FacetCount(_message.Message):
    __slots__ = ("value", "count")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    value: str
    count: int
    def __init__(self, value: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class ArmAssignment(_message.Message):
    __slots__ = ("layer", "arm")
    LAYER_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    layer: str
    arm: str
    def __init__(self, layer: _Optional[str] = ..., arm: _Optional[str] = ...) -> None: ...

class StageTiming(_message.Message):
    __slots__ = ("stage", "ms")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    MS_FIELD_NUMBER: _ClassVar[int]
    stage: str
    ms: float
    def __init__(self, stage: _Optional[str] = ..., ms: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("items", "arm", "assignments", "timings", "missing_summaries", "next_page_token", "offset", "facets", "collection", "cutoff", "impression_id", "feedback_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MISSING_SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    FACETS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CUTOFF_FIELD_NUMBER: _ClassVar[int]
    IMPRESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    arm: str
    assignments: _containers.RepeatedCompositeFieldContainer[ArmAssignment]
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    missing_summaries: int
    next_page_token: str
    offset: int
    facets: _containers.RepeatedCompositeFieldContainer[Facet]
    collection: str
    cutoff: float
    impression_id: str
    feedback_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., arm: _Optional[str] = ..., assignments: _Optional[_Iterable[_Union[ArmAssignment, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., missing_summaries: _Optional[int] = ..., next_page_token: _Optional[str] = ..., offset: _Optional[int] = ..., facets: _Optional[_Iterable[_Union[Facet, _Mapping]]] = ..., collection: _Optional[str] = ..., cutoff: _Optional[float] = ..., impression_id: _Optional[str] = ..., feedback_token: _Optional[str] = ...) -> None: ...

class ListScenesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Scene(_message.Message):
    __slots__ = ("name", "modality", "image_query", "layers", "collection", "version", "evaluation", "documents", "generation", "fields", "collapse", "note", "text_fields")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_QUERY_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    COLLAPSE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    modality: str
    image_query: bool
    layers: _containers.RepeatedScalarFieldContainer[str]
    collection: str
    version: str
    evaluation: IndexEvaluation
    documents: int
    generation: int
    fields: _containers.RepeatedCompositeFieldContainer[SceneField]
    collapse: str
    note: str
    text_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., modality: _Optional[str] = ..., image_query: _Optional[bool] = ..., layers: _Optional[_Iterable[str]] = ..., collection: _Optional[str] = ..., version: _Optional[str] = ..., evaluation: _Optional[_Union[IndexEvaluation, _Mapping]] = ..., documents: _Optional[int] = ..., generation: _Optional[int] = ..., fields: _Optional[_Iterable[_Union[SceneField, _Mapping]]] = ..., collapse: _Optional[str] = ..., note: _Optional[str] = ..., text_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class IndexEvaluation(_message.Message):
    __slots__ = ("queries", "k", "recall", "mrr", "ndcg10", "zero_hit", "p99_ms", "forced", "published_at")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    RECALL_FIELD_NUMBER: _ClassVar[int]
    MRR_FIELD_NUMBER: _ClassVar[int]
    NDCG10_FIELD_NUMBER: _ClassVar[int]
    ZERO_HIT_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    queries: int
    k: int
    recall: float
    mrr: float
    ndcg10: float
    zero_hit: float
    p99_ms: float
    forced: bool
    published_at: float
    def __init__(self, queries: _Optional[int] = ..., k: _Optional[int] = ..., recall: _Optional[float] = ..., mrr: _Optional[float] = ..., ndcg10: _Optional[float] = ..., zero_hit: _Optional[float] = ..., p99_ms: _Optional[float] = ..., forced: _Optional[bool] = ..., published_at: _Optional[float] = ...) -> None: ...

class SceneField(_message.Message):
    __slots__ = ("name", "type", "operators", "facet")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    OPERATORS_FIELD_NUMBER: _ClassVar[int]
    FACET_FIELD_NUMBER: _ClassVar[int]
    name: str
    type: str
    operators: _containers.RepeatedScalarFieldContainer[str]
    facet: bool
    def __init__(self, name: _Optional[str] = ..., type: _Optional[str] = ..., operators: _Optional[_Iterable[str]] = ..., facet: _Optional[bool] = ...) -> None: ...

class ListScenesResponse(_message.Message):
    __slots__ = ("scenes",)
    SCENES_FIELD_NUMBER: _ClassVar[int]
    scenes: _containers.RepeatedCompositeFieldContainer[Scene]
    def __init__(self, scenes: _Optional[_Iterable[_Union[Scene, _Mapping]]] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("feedback_token", "item_id", "event", "dwell_seconds")
    FEEDBACK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    DWELL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    feedback_token: str
    item_id: int
    event: FeedbackEvent
    dwell_seconds: float
    def __init__(self, feedback_token: _Optional[str] = ..., item_id: _Optional[int] = ..., event: _Optional[_Union[FeedbackEvent, str]] = ..., dwell_seconds: _Optional[float] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("impression_id", "duplicate")
    IMPRESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    impression_id: str
    duplicate: bool
    def __init__(self, impression_id: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

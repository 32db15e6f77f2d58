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
    __slots__ = ("scene", "text", "image", "top_k", "user_id", "diversify", "force_arms")
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
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    DIVERSIFY_FIELD_NUMBER: _ClassVar[int]
    FORCE_ARMS_FIELD_NUMBER: _ClassVar[int]
    scene: str
    text: str
    image: bytes
    top_k: int
    user_id: str
    diversify: bool
    force_arms: _containers.ScalarMap[str, str]
    def __init__(self, scene: _Optional[str] = ..., text: _Optional[str] = ..., image: _Optional[bytes] = ..., top_k: _Optional[int] = ..., user_id: _Optional[str] = ..., diversify: _Optional[bool] = ..., force_arms: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("id", "score", "retrieval_score", "summary")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_SCORE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    id: int
    score: float
    retrieval_score: float
    summary: _struct_pb2.Struct
    def __init__(self, id: _Optional[int] = ..., score: _Optional[float] = ..., retrieval_score: _Optional[float] = ..., summary: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("items", "arm", "assignments", "timings", "missing_summaries", "impression_id", "feedback_token")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    ARM_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    MISSING_SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    IMPRESSION_ID_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    arm: str
    assignments: _containers.RepeatedCompositeFieldContainer[ArmAssignment]
    timings: _containers.RepeatedCompositeFieldContainer[StageTiming]
    missing_summaries: int
    impression_id: str
    feedback_token: str
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ..., arm: _Optional[str] = ..., assignments: _Optional[_Iterable[_Union[ArmAssignment, _Mapping]]] = ..., timings: _Optional[_Iterable[_Union[StageTiming, _Mapping]]] = ..., missing_summaries: _Optional[int] = ..., impression_id: _Optional[str] = ..., feedback_token: _Optional[str] = ...) -> None: ...

class ListScenesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Scene(_message.Message):
    __slots__ = ("name", "modality", "image_query", "layers", "collection", "version", "evaluation", "documents", "generation")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    IMAGE_QUERY_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    modality: str
    image_query: bool
    layers: _containers.RepeatedScalarFieldContainer[str]
    collection: str
    version: str
    evaluation: IndexEvaluation
    documents: int
    generation: int
    def __init__(self, name: _Optional[str] = ..., modality: _Optional[str] = ..., image_query: _Optional[bool] = ..., layers: _Optional[_Iterable[str]] = ..., collection: _Optional[str] = ..., version: _Optional[str] = ..., evaluation: _Optional[_Union[IndexEvaluation, _Mapping]] = ..., documents: _Optional[int] = ..., generation: _Optional[int] = ...) -> None: ...

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

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITEM_STATUS_UNSPECIFIED: _ClassVar[ItemStatus]
    ITEM_STATUS_APPLIED: _ClassVar[ItemStatus]
    ITEM_STATUS_UNCHANGED: _ClassVar[ItemStatus]
    ITEM_STATUS_REFUSED: _ClassVar[ItemStatus]
    ITEM_STATUS_NOT_FOUND: _ClassVar[ItemStatus]
ITEM_STATUS_UNSPECIFIED: ItemStatus
ITEM_STATUS_APPLIED: ItemStatus
ITEM_STATUS_UNCHANGED: ItemStatus
ITEM_STATUS_REFUSED: ItemStatus
ITEM_STATUS_NOT_FOUND: ItemStatus

class Document(_message.Message):
    __slots__ = ("id", "fields", "image", "image_url")
    ID_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    id: int
    fields: _struct_pb2.Struct
    image: bytes
    image_url: str
    def __init__(self, id: _Optional[int] = ..., fields: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., image: _Optional[bytes] = ..., image_url: _Optional[str] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("scene", "documents")
    SCENE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    scene: str
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, scene: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("scene", "ids")
    SCENE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    scene: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, scene: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ...) -> None: ...

class ItemResult(_message.Message):
    __slots__ = ("index", "id", "status", "field", "reason")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    index: int
    id: int
    status: ItemStatus
    field: str
    reason: str
    def __init__(self, index: _Optional[int] = ..., id: _Optional[int] = ..., status: _Optional[_Union[ItemStatus, str]] = ..., field: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class WriteResponse(_message.Message):
    __slots__ = ("results", "collection", "position")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[ItemResult]
    collection: str
    position: int
    def __init__(self, results: _Optional[_Iterable[_Union[ItemResult, _Mapping]]] = ..., collection: _Optional[str] = ..., position: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("scene", "ids")
    SCENE_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    scene: str
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, scene: _Optional[str] = ..., ids: _Optional[_Iterable[int]] = ...) -> None: ...

class StoredDocument(_message.Message):
    __slots__ = ("id", "fields", "content_sha256")
    ID_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    id: int
    fields: _struct_pb2.Struct
    content_sha256: str
    def __init__(self, id: _Optional[int] = ..., fields: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., content_sha256: _Optional[str] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("documents", "missing", "collection")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[StoredDocument]
    missing: _containers.RepeatedScalarFieldContainer[int]
    collection: str
    def __init__(self, documents: _Optional[_Iterable[_Union[StoredDocument, _Mapping]]] = ..., missing: _Optional[_Iterable[int]] = ..., collection: _Optional[str] = ...) -> None: ...

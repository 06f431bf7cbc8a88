from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Dtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[Dtype]
    DTYPE_FP16: _ClassVar[Dtype]
    DTYPE_INT8: _ClassVar[Dtype]
DTYPE_UNSPECIFIED: Dtype
DTYPE_FP16: Dtype
DTYPE_INT8: Dtype

class Hello(_message.Message):
    __slots__ = ("node_id", "software_version", "encoder_model_id", "encoder_hash", "embedding_dim", "embedding_dtype", "capabilities", "epoch", "session_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    ENCODER_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ENCODER_HASH_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DTYPE_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    software_version: str
    encoder_model_id: str
    encoder_hash: str
    embedding_dim: int
    embedding_dtype: Dtype
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    epoch: int
    session_id: str
    def __init__(self, node_id: _Optional[str] = ..., software_version: _Optional[str] = ..., encoder_model_id: _Optional[str] = ..., encoder_hash: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., embedding_dtype: _Optional[_Union[Dtype, str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., epoch: _Optional[int] = ..., session_id: _Optional[str] = ...) -> None: ...

class RhythmMetrics(_message.Message):
    __slots__ = ("intensity", "beat_alignment", "beat_coverage", "beat_hit_rate", "align_precision", "align_recall", "align_f1", "tempo_bpm", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    INTENSITY_FIELD_NUMBER: _ClassVar[int]
    BEAT_ALIGNMENT_FIELD_NUMBER: _ClassVar[int]
    BEAT_COVERAGE_FIELD_NUMBER: _ClassVar[int]
    BEAT_HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    ALIGN_PRECISION_FIELD_NUMBER: _ClassVar[int]
    ALIGN_RECALL_FIELD_NUMBER: _ClassVar[int]
    ALIGN_F1_FIELD_NUMBER: _ClassVar[int]
    TEMPO_BPM_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    intensity: float
    beat_alignment: float
    beat_coverage: float
    beat_hit_rate: float
    align_precision: float
    align_recall: float
    align_f1: float
    tempo_bpm: float
    extra: _containers.ScalarMap[str, float]
    def __init__(self, intensity: _Optional[float] = ..., beat_alignment: _Optional[float] = ..., beat_coverage: _Optional[float] = ..., beat_hit_rate: _Optional[float] = ..., align_precision: _Optional[float] = ..., align_recall: _Optional[float] = ..., align_f1: _Optional[float] = ..., tempo_bpm: _Optional[float] = ..., extra: _Optional[_Mapping[str, float]] = ...) -> None: ...

class WindowEmbedding(_message.Message):
    __slots__ = ("track_id", "seq", "t0_ms", "t1_ms", "embedding", "scale", "rhythm", "pose_quality")
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    T0_MS_FIELD_NUMBER: _ClassVar[int]
    T1_MS_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    RHYTHM_FIELD_NUMBER: _ClassVar[int]
    POSE_QUALITY_FIELD_NUMBER: _ClassVar[int]
    track_id: int
    seq: int
    t0_ms: int
    t1_ms: int
    embedding: bytes
    scale: float
    rhythm: RhythmMetrics
    pose_quality: float
    def __init__(self, track_id: _Optional[int] = ..., seq: _Optional[int] = ..., t0_ms: _Optional[int] = ..., t1_ms: _Optional[int] = ..., embedding: _Optional[bytes] = ..., scale: _Optional[float] = ..., rhythm: _Optional[_Union[RhythmMetrics, _Mapping]] = ..., pose_quality: _Optional[float] = ...) -> None: ...

class BeatGrid(_message.Message):
    __slots__ = ("seq", "t0_ms", "t1_ms", "bpm", "confidence", "beat_ms", "beat_count", "onset_ms")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    T0_MS_FIELD_NUMBER: _ClassVar[int]
    T1_MS_FIELD_NUMBER: _ClassVar[int]
    BPM_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    BEAT_MS_FIELD_NUMBER: _ClassVar[int]
    BEAT_COUNT_FIELD_NUMBER: _ClassVar[int]
    ONSET_MS_FIELD_NUMBER: _ClassVar[int]
    seq: int
    t0_ms: int
    t1_ms: int
    bpm: float
    confidence: float
    beat_ms: _containers.RepeatedScalarFieldContainer[int]
    beat_count: _containers.RepeatedScalarFieldContainer[int]
    onset_ms: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, seq: _Optional[int] = ..., t0_ms: _Optional[int] = ..., t1_ms: _Optional[int] = ..., bpm: _Optional[float] = ..., confidence: _Optional[float] = ..., beat_ms: _Optional[_Iterable[int]] = ..., beat_count: _Optional[_Iterable[int]] = ..., onset_ms: _Optional[_Iterable[int]] = ...) -> None: ...

class WindowBatch(_message.Message):
    __slots__ = ("node_id", "session_id", "dtype", "floor_seq", "windows", "beats")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    FLOOR_SEQ_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    BEATS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    session_id: str
    dtype: Dtype
    floor_seq: int
    windows: _containers.RepeatedCompositeFieldContainer[WindowEmbedding]
    beats: _containers.RepeatedCompositeFieldContainer[BeatGrid]
    def __init__(self, node_id: _Optional[str] = ..., session_id: _Optional[str] = ..., dtype: _Optional[_Union[Dtype, str]] = ..., floor_seq: _Optional[int] = ..., windows: _Optional[_Iterable[_Union[WindowEmbedding, _Mapping]]] = ..., beats: _Optional[_Iterable[_Union[BeatGrid, _Mapping]]] = ...) -> None: ...

class Heartbeat(_message.Message):
    __slots__ = ("t_us", "echo_us")
    T_US_FIELD_NUMBER: _ClassVar[int]
    ECHO_US_FIELD_NUMBER: _ClassVar[int]
    t_us: int
    echo_us: int
    def __init__(self, t_us: _Optional[int] = ..., echo_us: _Optional[int] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("epoch", "seq")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    seq: int
    def __init__(self, epoch: _Optional[int] = ..., seq: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "fatal", "expected", "got")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CODE_UNSPECIFIED: _ClassVar[Error.Code]
        BAD_FRAME: _ClassVar[Error.Code]
        BAD_VERSION: _ClassVar[Error.Code]
        TOO_LARGE: _ClassVar[Error.Code]
        SCHEMA: _ClassVar[Error.Code]
        ENCODER_MISMATCH: _ClassVar[Error.Code]
        HELLO_REQUIRED: _ClassVar[Error.Code]
        OVERLOADED: _ClassVar[Error.Code]
        INTERNAL: _ClassVar[Error.Code]
        UNAUTHORIZED: _ClassVar[Error.Code]
    CODE_UNSPECIFIED: Error.Code
    BAD_FRAME: Error.Code
    BAD_VERSION: Error.Code
    TOO_LARGE: Error.Code
    SCHEMA: Error.Code
    ENCODER_MISMATCH: Error.Code
    HELLO_REQUIRED: Error.Code
    OVERLOADED: Error.Code
    INTERNAL: Error.Code
    UNAUTHORIZED: Error.Code
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FATAL_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    GOT_FIELD_NUMBER: _ClassVar[int]
    code: Error.Code
    message: str
    fatal: bool
    expected: str
    got: str
    def __init__(self, code: _Optional[_Union[Error.Code, str]] = ..., message: _Optional[str] = ..., fatal: _Optional[bool] = ..., expected: _Optional[str] = ..., got: _Optional[str] = ...) -> None: ...

class StyleProb(_message.Message):
    __slots__ = ("label", "p")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    P_FIELD_NUMBER: _ClassVar[int]
    label: str
    p: float
    def __init__(self, label: _Optional[str] = ..., p: _Optional[float] = ...) -> None: ...

class Neighbor(_message.Message):
    __slots__ = ("ref_id", "label", "score")
    REF_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    ref_id: str
    label: str
    score: float
    def __init__(self, ref_id: _Optional[str] = ..., label: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class DancerFeedback(_message.Message):
    __slots__ = ("track_id", "seq", "t0_ms", "t1_ms", "styles", "style", "confidence", "nearest", "nearest_groups", "scores")
    class ScoresEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TRACK_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    T0_MS_FIELD_NUMBER: _ClassVar[int]
    T1_MS_FIELD_NUMBER: _ClassVar[int]
    STYLES_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    NEAREST_FIELD_NUMBER: _ClassVar[int]
    NEAREST_GROUPS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    track_id: int
    seq: int
    t0_ms: int
    t1_ms: int
    styles: _containers.RepeatedCompositeFieldContainer[StyleProb]
    style: str
    confidence: float
    nearest: _containers.RepeatedCompositeFieldContainer[Neighbor]
    nearest_groups: _containers.RepeatedCompositeFieldContainer[Neighbor]
    scores: _containers.ScalarMap[str, float]
    def __init__(self, track_id: _Optional[int] = ..., seq: _Optional[int] = ..., t0_ms: _Optional[int] = ..., t1_ms: _Optional[int] = ..., styles: _Optional[_Iterable[_Union[StyleProb, _Mapping]]] = ..., style: _Optional[str] = ..., confidence: _Optional[float] = ..., nearest: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ..., nearest_groups: _Optional[_Iterable[_Union[Neighbor, _Mapping]]] = ..., scores: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Feedback(_message.Message):
    __slots__ = ("session_id", "dancers", "t_us")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DANCERS_FIELD_NUMBER: _ClassVar[int]
    T_US_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    dancers: _containers.RepeatedCompositeFieldContainer[DancerFeedback]
    t_us: int
    def __init__(self, session_id: _Optional[str] = ..., dancers: _Optional[_Iterable[_Union[DancerFeedback, _Mapping]]] = ..., t_us: _Optional[int] = ...) -> None: ...

class Envelope(_message.Message):
    __slots__ = ("version", "hello", "batch", "heartbeat", "ack", "error", "feedback")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    version: int
    hello: Hello
    batch: WindowBatch
    heartbeat: Heartbeat
    ack: Ack
    error: Error
    feedback: Feedback
    def __init__(self, version: _Optional[int] = ..., hello: _Optional[_Union[Hello, _Mapping]] = ..., batch: _Optional[_Union[WindowBatch, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., feedback: _Optional[_Union[Feedback, _Mapping]] = ...) -> None: ...

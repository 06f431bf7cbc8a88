"""TensorRT backend: build an engine from the ONNX file once, cache it, run it on a CUDA stream.

Written against TensorRT 10's Python API (8.6 works too) and cuda-python's runtime bindings
(``cuda.bindings.runtime``; older releases call it ``cuda.cudart``). No pycuda.

* Build: ``Builder`` -> explicit-batch network from ``OnnxParser`` -> ``BuilderConfig`` with a
  workspace memory-pool limit, FP16 / INT8 flags (INT8 keeps FP16 as the fallback precision
  and needs an ``IInt8Calibrator``, see ``calibrate/int8.py``), and one optimization profile
  (min 1 / opt / max ``max_batch``) for inputs whose batch dimension is dynamic, such as the
  landmark model. Building takes seconds on a desktop GPU and minutes on a Jetson: progress
  goes to stderr through an ``IProgressMonitor`` plus a heartbeat line.
* Cache: the serialized engine lives in ``cache_dir()/engines/``; its key hashes the ONNX
  file's sha256, the GPU's name and compute capability, the TensorRT version, the precision
  and the max batch, so a different GPU, TensorRT upgrade or model never loads a stale plan.
* Run: one pinned host buffer and one device buffer per I/O tensor, sized for the largest
  batch; ``cudaMemcpyAsync`` in, ``execute_async_v3`` with ``set_tensor_address``,
  ``cudaMemcpyAsync`` out, all on one CUDA stream, then one stream synchronize.

Where TensorRT, cuda-python or a GPU is missing, construction raises a one-line
`DeviceError` that names the fix (or the onnxruntime backend).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dancewire.errors import DancewireError, DeviceError, ModelCacheError
from dancewire.paths import cache_dir, state_dir
from dancewire.progress import Progress
from edge.engines.base import Engine, TensorSpec

log = logging.getLogger("dancewire.engines.trt")

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_WORKSPACE_MIB = 1024


# --------------------------------------------------------------------------- imports

def import_tensorrt():
    """The `tensorrt` module, or a DeviceError saying where to get it."""
    try:
        import tensorrt as trt  # noqa: PLC0415
    except Exception as exc:  # ImportError, or OSError from a missing libnvinfer/libnvonnxparser
        why = str(exc).splitlines()[0] if str(exc) else "no module"
        raise DeviceError(
            f"TensorRT is not available ({type(exc).__name__}: {why}); "
            "it comes with JetPack on a Jetson, or NVIDIA's pip index / container on a desktop GPU "
            "(pip install 'dancewire[gpu]' there); or use the onnxruntime backend") from None
    return trt


def import_cudart():
    """cuda-python's runtime module (new or old location), or a DeviceError."""
    try:
        from cuda.bindings import runtime as cudart  # noqa: PLC0415  (cuda-python >= 12.6)
        return cudart
    except ImportError:
        pass
    try:
        from cuda import cudart  # noqa: PLC0415  (older cuda-python)
        return cudart
    except ImportError as exc:
        raise DeviceError(f"cuda-python is not installed ({exc}); pip install 'cuda-python>=12' "
                          "(matching the CUDA major version of the TensorRT build)") from None


def _err_name(cudart, err) -> str:
    try:
        res = cudart.cudaGetErrorName(err)
        name = res[1] if isinstance(res, tuple) else res
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:  # pragma: no cover - best effort
        return str(err)


def cuda_call(cudart, result, what: str):
    """Unpack a cuda-python ``(err, *values)`` tuple; raise DeviceError on failure."""
    if isinstance(result, tuple):
        err, values = result[0], result[1:]
    else:
        err, values = result, ()
    if err != cudart.cudaError_t.cudaSuccess:
        raise DeviceError(f"CUDA {what} failed: {_err_name(cudart, err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    compute_capability: tuple[int, int]


def gpu_info(cudart=None, device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device `device`; DeviceError if there is none."""
    cudart = cudart or import_cudart()
    count = cudart.cudaGetDeviceCount()
    err = count[0]
    if err != cudart.cudaError_t.cudaSuccess:
        raise DeviceError(f"no usable CUDA GPU ({_err_name(cudart, err)}); "
                          "check the NVIDIA driver, or use the onnxruntime backend")
    if count[1] <= device:
        raise DeviceError(f"CUDA device {device} not found ({count[1]} GPU(s) visible); "
                          "use the onnxruntime backend")
    cuda_call(cudart, cudart.cudaSetDevice(device), "cudaSetDevice")
    props = cuda_call(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\0", 1)[0].decode(errors="replace")
    return GpuInfo(device, str(name).strip(), (int(props.major), int(props.minor)))


# --------------------------------------------------------------------------- cache key

def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    except OSError as exc:
        raise ModelCacheError(f"cannot read ONNX model {path}: {exc.strerror or exc}") from None
    return h.hexdigest()


def opt_batch_of(max_batch: int, opt_batch: int | None) -> int:
    """The optimization profile's `opt` batch: as asked, else 4 (never above max_batch)."""
    return max(1, min(int(max_batch), opt_batch or min(4, int(max_batch))))


def engine_key_fields(onnx_sha256: str, gpu_name: str, compute_capability: tuple[int, int],
                      trt_version: str, precision: str, max_batch: int,
                      int8_calibration_sha256: str | None = None, opt_batch: int | None = None,
                      workspace_mib: int = DEFAULT_WORKSPACE_MIB) -> dict:
    """Everything a serialized plan depends on; a change in any field means a rebuild (the opt batch
    and the workspace shape the kernels TensorRT picks).

    INT8 plans also depend on the calibration (the per-tensor scales): its cache's sha256."""
    fields = {"onnx_sha256": onnx_sha256, "gpu": gpu_name,
              "compute_capability": f"{compute_capability[0]}.{compute_capability[1]}",
              "tensorrt": str(trt_version), "precision": precision, "max_batch": int(max_batch),
              "opt_batch": opt_batch_of(max_batch, opt_batch), "workspace_mib": int(workspace_mib)}
    if precision == "int8":
        fields["int8_calibration_sha256"] = int8_calibration_sha256 or "none"
    return fields


def engine_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def engine_cache_path(onnx_path: str | Path, fields: dict, root: Path | None = None) -> Path:
    """``<root>/engines/<model stem>-<precision>-b<max batch>-<key[:16]>.engine``."""
    root = Path(root) if root is not None else cache_dir()
    stem = Path(onnx_path).stem
    name = f"{stem}-{fields['precision']}-b{fields['max_batch']}-{engine_key(fields)[:16]}.engine"
    return root / "engines" / name


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)     # no half file left behind (a full disk)
        raise


def int8_cache_path(onnx_path: str | Path, onnx_sha256: str | None = None) -> Path:
    """Where `dancewire calibrate int8` keeps a model's INT8 calibration cache (per rig:
    the scales come from frames recorded on it): ``state_dir()/calibration/int8/``."""
    sha = onnx_sha256 or file_sha256(onnx_path)
    return state_dir() / "calibration" / "int8" / f"{Path(onnx_path).stem}-{sha[:12]}.calib"


def cache_only_calibrator(trt, cache_file: Path, batch_size: int = 1):
    """An entropy calibrator that only replays a calibration cache (no calibration data):
    lets an INT8 engine be rebuilt (new TensorRT, new GPU) without the recorded frames."""
    data = Path(cache_file).read_bytes()

    class _CacheOnly(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self):
            return batch_size

        def get_batch(self, names):
            return None     # no data: TensorRT must use the cache

        def read_calibration_cache(self):
            return data

        def write_calibration_cache(self, cache):
            pass

    return _CacheOnly()


# --------------------------------------------------------------------------- build

def _trt_logger(trt):
    """A TensorRT logger that forwards to Python logging (the CLI logs, it does not print)."""
    sev = trt.ILogger.Severity
    levels = {sev.INTERNAL_ERROR: logging.ERROR, sev.ERROR: logging.ERROR,
              sev.WARNING: logging.WARNING, sev.INFO: logging.DEBUG, sev.VERBOSE: logging.DEBUG}
    trt_log = logging.getLogger("dancewire.tensorrt")

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            trt_log.log(levels.get(severity, logging.INFO), "%s", msg)

    return _Logger()


def _progress_monitor(trt, bar: Progress):
    """An IProgressMonitor (TensorRT >= 10) that reports builder phases on the progress line."""
    if not hasattr(trt, "IProgressMonitor"):
        return None
    lock = threading.Lock()

    class _Monitor(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name, parent_phase, num_steps):
            with lock:
                self.steps[phase_name] = int(num_steps)
                depth = 1 if parent_phase else 0
                bar.update(0, f"{'  ' * depth}{phase_name} (0/{num_steps})")

        def step_complete(self, phase_name, step):
            with lock:
                bar.update(0, f"{phase_name} ({step + 1}/{self.steps.get(phase_name, '?')})")
            return True  # False would cancel the build

        def phase_finish(self, phase_name):
            with lock:
                self.steps.pop(phase_name, None)

    return _Monitor()


class _Heartbeat:
    """Prints 'still building' every few seconds while TensorRT works without reporting."""

    def __init__(self, bar: Progress, every: float = 10.0):
        self.bar, self.every = bar, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trt-build-heartbeat", daemon=True)

    def _run(self):
        while not self._stop.wait(self.every):
            self.bar.update(0, "still building")

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=1.0)


def build_serialized_engine(trt, logger, onnx_path: Path, precision: str, max_batch: int,
                            calibrator=None, opt_batch: int | None = None,
                            workspace_mib: int = DEFAULT_WORKSPACE_MIB) -> bytes:
    """Parse the ONNX file and build a serialized plan. Raises DancewireError on failure."""
    builder = trt.Builder(logger)
    flags = 0
    major = int(str(trt.__version__).split(".")[0])
    if major < 10 and hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)  # always explicit in 10
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ModelCacheError(f"TensorRT cannot parse {onnx_path.name}: {errors or 'unknown error'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)   # on by default: Ampere+ would round inputs to 10-bit mantissas
    if precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):
            log.warning("this GPU has no fast FP16; building FP16 anyway")
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        if calibrator is None:
            raise DancewireError("an INT8 engine needs a calibrator: run `dancewire calibrate int8` first")
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator

    # One optimization profile for dynamic-batch inputs: min 1, opt, max `max_batch`.
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    dynamic = []
    for tensor in inputs:
        shape = tuple(tensor.shape)
        if any(d < 0 for d in shape[1:]):
            raise DancewireError(f"input {tensor.name!r} of {onnx_path.name} has a dynamic non-batch "
                                 f"dimension {shape}; only the batch dimension may be dynamic")
        if shape and shape[0] < 0:
            dynamic.append((tensor.name, shape[1:]))
    if dynamic:
        opt = opt_batch_of(max_batch, opt_batch)
        profile = builder.create_optimization_profile()
        for name, rest in dynamic:
            profile.set_shape(name, (1, *rest), (opt, *rest), (max_batch, *rest))
        config.add_optimization_profile(profile)
        if precision == "int8":
            # Calibration runs at one fixed shape: the calibrator's batch size.
            cb = int(calibrator.get_batch_size())
            if not 1 <= cb <= max_batch:
                raise DancewireError(f"calibration batch {cb} outside 1..{max_batch}")
            cprofile = builder.create_optimization_profile()
            for name, rest in dynamic:
                cprofile.set_shape(name, (cb, *rest), (cb, *rest), (cb, *rest))
            config.set_calibration_profile(cprofile)
    elif max_batch > 1:
        log.info("%s has a fixed batch dimension; max_batch=%d has no effect", onnx_path.name, max_batch)

    bar = Progress(f"building TensorRT {precision} engine for {onnx_path.name} (minutes on a Jetson)",
                   interval=2.0)
    bar.update(0, "parsing done, optimizing")
    monitor = _progress_monitor(trt, bar)
    if monitor is not None:
        config.progress_monitor = monitor
    start = time.monotonic()
    with _Heartbeat(bar):
        plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise DancewireError(f"TensorRT failed to build an engine for {onnx_path.name} "
                             "(see the log with -v for TensorRT's messages)")
    data = bytes(memoryview(plan))
    bar.interval = 0.0
    bar.update(0, f"built in {time.monotonic() - start:.1f}s ({len(data) / 2**20:.1f} MiB)")
    return data


# --------------------------------------------------------------------------- engine

class _Buffer:
    """A pinned host buffer (viewed as numpy) and a device buffer of the same size."""

    def __init__(self, cudart, nbytes: int):
        self.cudart = cudart
        self.nbytes = max(int(nbytes), 1)
        self.host_ptr = cuda_call(cudart, cudart.cudaMallocHost(self.nbytes), "cudaMallocHost")
        try:
            self.device_ptr = cuda_call(cudart, cudart.cudaMalloc(self.nbytes), "cudaMalloc")
        except DeviceError:
            cudart.cudaFreeHost(self.host_ptr)
            raise
        raw = ctypes.cast(int(self.host_ptr), ctypes.POINTER(ctypes.c_uint8))
        self.host = np.ctypeslib.as_array(raw, (self.nbytes,))

    def host_view(self, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        return self.host[:count * np.dtype(dtype).itemsize].view(dtype).reshape(shape)

    def free(self) -> None:
        if self.device_ptr is not None:
            self.cudart.cudaFree(self.device_ptr)
            self.device_ptr = None
        if self.host_ptr is not None:
            self.host = None
            self.cudart.cudaFreeHost(self.host_ptr)
            self.host_ptr = None


class TrtEngine(Engine):
    """A TensorRT engine built from (and cached for) one ONNX file. Not thread-safe."""

    backend = "tensorrt"

    def __init__(self, onnx_path: str | Path, precision: str = "fp16", max_batch: int = 8,
                 calibrator=None, *, opt_batch: int | None = None,
                 workspace_mib: int = DEFAULT_WORKSPACE_MIB, device: int = 0,
                 cache_root: str | Path | None = None, rebuild: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; choose one of {PRECISIONS}")
        if int(max_batch) < 1:
            raise ValueError("max_batch must be >= 1")
        self.path = Path(onnx_path)
        self.precision = precision
        self._closed = True
        self._buffers: dict[str, _Buffer] = {}
        self._stream = None
        if not self.path.is_file():
            raise ModelCacheError(f"ONNX model not found: {self.path} (run `dancewire models build`)")

        trt = import_tensorrt()
        cudart = import_cudart()
        self._trt, self._cudart = trt, cudart
        gpu = gpu_info(cudart, device)
        self.gpu = gpu
        onnx_sha = file_sha256(self.path)
        root = Path(cache_root) if cache_root is not None else None
        calib_file: Path | None = None
        if precision == "int8":
            calib_file = Path(getattr(calibrator, "cache_file", None) or int8_cache_path(self.path, onnx_sha))

        def key_now() -> None:
            calib_sha = file_sha256(calib_file) if calib_file is not None and calib_file.is_file() else None
            self.key_fields = engine_key_fields(onnx_sha, gpu.name, gpu.compute_capability, trt.__version__,
                                                precision, int(max_batch), calib_sha, opt_batch, workspace_mib)
            self.key = engine_key(self.key_fields)
            self.cache_path = engine_cache_path(self.path, self.key_fields, root)

        key_now()
        self._logger = _trt_logger(trt)

        self.cache_hit = False
        plan = None
        if self.cache_path.is_file() and not rebuild:
            plan = self.cache_path.read_bytes()
            self.cache_hit = True
            log.info("TensorRT engine cache hit: %s", self.cache_path)
        runtime = trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(plan) if plan is not None else None
        if engine is None:
            if plan is not None:
                log.warning("cached engine %s could not be loaded; rebuilding", self.cache_path)
                self.cache_hit = False
            replay = precision == "int8" and calibrator is None     # rebuild from the calibration cache
            if replay:
                if not calib_file.is_file():
                    raise DancewireError(f"an INT8 engine for {self.path.name} needs a calibration: run "
                                         "`dancewire calibrate int8 FRAMES_OR_VIDEO` on this rig first")
                calibrator = cache_only_calibrator(trt, calib_file)
            try:
                plan = build_serialized_engine(trt, self._logger, self.path, precision, int(max_batch),
                                               calibrator=calibrator, opt_batch=opt_batch,
                                               workspace_mib=workspace_mib)
            except DancewireError as exc:
                if replay:   # e.g. a calibration cache written by another TensorRT version
                    raise DancewireError(f"{exc}; the INT8 calibration cache {calib_file} may be stale: run "
                                         "`dancewire calibrate int8 FRAMES_OR_VIDEO --recalibrate`") from None
                raise
            if precision == "int8":
                key_now()        # the calibrator may just have written the calibration cache
            try:       # the plan in memory is good: a cache that cannot be written costs the next start only
                _write_atomic(self.cache_path, plan)
                _write_atomic(self.cache_path.with_suffix(".json"),
                              json.dumps({**self.key_fields, "onnx": str(self.path), "key": self.key,
                                          "built_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2).encode())
            except OSError as exc:
                self.cache_path.unlink(missing_ok=True)       # never a plan without its key file
                log.warning("TensorRT engine for %s built, but not cached (%s): it is built again next start",
                            self.path.name, exc)
            engine = runtime.deserialize_cuda_engine(plan)
            if engine is None:
                raise DancewireError(f"TensorRT built but could not load the engine for {self.path.name}")
        self._runtime, self._engine = runtime, engine
        self._context = engine.create_execution_context()
        if self._context is None:
            raise DeviceError("TensorRT could not create an execution context (out of GPU memory?)")
        self._setup_io()
        self._closed = False

    # ---- tensors and buffers
    def _setup_io(self) -> None:
        trt, engine, ctx, cudart = self._trt, self._engine, self._context, self._cudart
        inputs, outputs = [], []
        max_shapes: dict[str, tuple[int, ...]] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(int(d) for d in engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            spec = TensorSpec(name, tuple(None if d < 0 else d for d in shape), dtype)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append(spec)
                if any(d < 0 for d in shape):
                    max_shapes[name] = tuple(int(d) for d in engine.get_tensor_profile_shape(name, 0)[2])
                else:
                    max_shapes[name] = shape
            else:
                outputs.append(spec)
        self._inputs, self._outputs = inputs, outputs
        batch_dims = {max_shapes[s.name][0] for s in inputs if s.shape and s.shape[0] is None}
        self._max_batch = min(batch_dims) if batch_dims else 1
        # Largest output shapes: set every input to its largest shape and ask the context.
        for spec in inputs:
            ctx.set_input_shape(spec.name, max_shapes[spec.name])
        for spec in outputs:
            max_shapes[spec.name] = tuple(int(d) for d in ctx.get_tensor_shape(spec.name))
            if any(d < 0 for d in max_shapes[spec.name]):
                raise DancewireError(f"output {spec.name!r} has a data-dependent shape; not supported")
        self._stream = cuda_call(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        for spec in inputs + outputs:
            nbytes = int(np.prod(max_shapes[spec.name], dtype=np.int64)) * spec.dtype.itemsize
            buf = _Buffer(cudart, nbytes)
            self._buffers[spec.name] = buf
            if not ctx.set_tensor_address(spec.name, int(buf.device_ptr)):
                raise DancewireError(f"TensorRT rejected the buffer for {spec.name!r}")
        self._max_shapes = max_shapes

    @property
    def inputs(self) -> list[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self._outputs

    @property
    def max_batch(self) -> int:
        return self._max_batch

    # ---- inference
    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._closed:
            raise DancewireError("TensorRT engine is closed")
        cudart, ctx, stream = self._cudart, self._context, self._stream
        missing = [s.name for s in self._inputs if s.name not in feeds]
        if missing:
            raise ValueError(f"missing inputs {missing}; expected {[s.name for s in self._inputs]}")
        h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for spec in self._inputs:
            arr = np.ascontiguousarray(feeds[spec.name], dtype=spec.dtype)
            limit = self._max_shapes[spec.name]
            if arr.ndim != len(limit) or any(
                    (want is not None and got != want) for got, want in zip(arr.shape, spec.shape)):
                raise ValueError(f"input {spec.name!r}: shape {arr.shape} does not fit {spec.shape}")
            if arr.shape and arr.shape[0] > limit[0]:
                raise ValueError(f"input {spec.name!r}: batch {arr.shape[0]} exceeds max_batch "
                                 f"{limit[0]}; use run_batched")
            if not ctx.set_input_shape(spec.name, arr.shape):
                raise ValueError(f"TensorRT rejected input shape {arr.shape} for {spec.name!r}")
            buf = self._buffers[spec.name]
            host = buf.host_view(spec.dtype, arr.shape)
            np.copyto(host, arr)
            cuda_call(cudart, cudart.cudaMemcpyAsync(buf.device_ptr, buf.host_ptr, arr.nbytes, h2d, stream),
                      "cudaMemcpyAsync (host to device)")
        if not ctx.execute_async_v3(int(stream)):
            raise DancewireError("TensorRT execution failed (see the log with -v)")
        results: dict[str, np.ndarray] = {}
        views = []
        for spec in self._outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(spec.name))
            buf = self._buffers[spec.name]
            view = buf.host_view(spec.dtype, shape)
            cuda_call(cudart, cudart.cudaMemcpyAsync(buf.host_ptr, buf.device_ptr, view.nbytes, d2h, stream),
                      "cudaMemcpyAsync (device to host)")
            views.append((spec.name, view))
        cuda_call(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        for name, view in views:
            results[name] = view.copy()  # the pinned buffer is reused by the next run
        return results

    def close(self) -> None:
        if getattr(self, "_buffers", None):
            for buf in self._buffers.values():
                buf.free()
            self._buffers = {}
        if getattr(self, "_stream", None) is not None:
            self._cudart.cudaStreamDestroy(self._stream)
            self._stream = None
        self._context = None
        self._engine = None
        self._runtime = None
        self._closed = True

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

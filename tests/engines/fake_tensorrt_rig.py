"""Stand-ins for `tensorrt` and `cuda.bindings.runtime` on machines without a GPU.

They implement only the calls `edge/engines/trt.py` makes, with the same call shapes as the
real libraries (tuples ``(err, value)`` from cudart, ``Dims``-like tuples from TensorRT).
"Device" memory is host memory here, so copies and pointers are real; "execution" reads the
input buffers by address, runs the ONNX file through onnxruntime and writes the output
buffers. This exercises the engine's own logic (cache key and hit, profile shapes, buffer
sizes, copies, batching, cleanup); it proves nothing about TensorRT itself, which the
tests in test_engines_trt.py check wherever `import tensorrt` works.
"""
from __future__ import annotations

import ctypes
import enum
import json
import sys
import types

import numpy as np

def swallowed(method, *args):
    """As TensorRT's Python binding calls a calibrator's methods (pyInt8.cpp): whatever they raise is
    printed and taken as 'no more data' (None), never passed on."""
    try:
        return method(*args)
    except BaseException as exc:
        print(f"[ERROR] Exception caught in {method.__name__}(): {exc!r}", file=sys.stderr)
        return None


# ----------------------------------------------------------------------------- cudart


class cudaError_t(enum.IntEnum):
    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


class cudaMemcpyKind(enum.IntEnum):
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class _Stream:
    def __init__(self, handle):
        self.handle = handle

    def __int__(self):
        return self.handle


class FakeCudart(types.ModuleType):
    def __init__(self, device_count: int = 1, error: cudaError_t = cudaError_t.cudaSuccess):
        super().__init__("cuda.bindings.runtime")
        self.cudaError_t, self.cudaMemcpyKind = cudaError_t, cudaMemcpyKind
        self.device_count, self.error = device_count, error
        self.allocs: dict[int, ctypes.Array] = {}
        self.host_allocs: dict[int, ctypes.Array] = {}
        self.streams: set[int] = set()
        self.copies: list[tuple[int, int]] = []     # (kind, nbytes)

    def cudaGetErrorName(self, err):
        return cudaError_t.cudaSuccess, cudaError_t(err).name.encode()

    def cudaGetDeviceCount(self):
        return (self.error, 0) if self.error else (cudaError_t.cudaSuccess, self.device_count)

    def cudaSetDevice(self, index):
        return (cudaError_t.cudaSuccess,)

    def cudaGetDeviceProperties(self, index):
        return cudaError_t.cudaSuccess, types.SimpleNamespace(name=b"Fake GPU\x00\x00", major=8, minor=7)

    def _alloc(self, table, nbytes):
        buf = (ctypes.c_uint8 * nbytes)()
        table[ctypes.addressof(buf)] = buf
        return cudaError_t.cudaSuccess, ctypes.addressof(buf)

    def cudaMalloc(self, nbytes):
        return self._alloc(self.allocs, nbytes)

    def cudaMallocHost(self, nbytes):
        return self._alloc(self.host_allocs, nbytes)

    def cudaFree(self, ptr):
        del self.allocs[int(ptr)]
        return (cudaError_t.cudaSuccess,)

    def cudaFreeHost(self, ptr):
        del self.host_allocs[int(ptr)]
        return (cudaError_t.cudaSuccess,)

    def cudaStreamCreate(self):
        handle = 0x1000 + len(self.streams) + 1
        self.streams.add(handle)
        return cudaError_t.cudaSuccess, _Stream(handle)

    def cudaStreamDestroy(self, stream):
        self.streams.discard(int(stream))
        return (cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        assert int(stream) in self.streams
        return (cudaError_t.cudaSuccess,)

    def cudaMemcpy(self, dst, src, nbytes, kind):
        ctypes.memmove(int(dst), int(src), int(nbytes))
        self.copies.append((int(kind), int(nbytes)))
        return (cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        assert int(stream) in self.streams
        ctypes.memmove(int(dst), int(src), int(nbytes))
        self.copies.append((int(kind), int(nbytes)))
        return (cudaError_t.cudaSuccess,)


# ----------------------------------------------------------------------------- tensorrt

_ONNX_NP = {1: np.float32, 10: np.float16, 7: np.int64, 6: np.int32}


class FakeTensorRT(types.ModuleType):
    """The subset of tensorrt 10 that the engine uses."""

    def __init__(self):
        super().__init__("tensorrt")
        trt = self
        self.__version__ = "10.99.0"
        self.builds = 0
        self.phases: list[str] = []
        self.configs: list = []

        class ILogger:
            class Severity(enum.IntEnum):
                INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

            def __init__(self):
                pass

        class IProgressMonitor:
            def __init__(self):
                pass

        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

        self.ILogger, self.IProgressMonitor = ILogger, IProgressMonitor
        self.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
        self.calibration_batches: list[np.ndarray] = []   # what the builder read from the calibrator
        self.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {"EXPLICIT_BATCH": 0})
        self.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0})
        self.BuilderFlag = enum.IntEnum("BuilderFlag", {"FP16": 0, "INT8": 1, "TF32": 2})
        self.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})
        self.nptype = lambda dt: dt

        class Tensor:
            def __init__(self, name, shape, dtype):
                self.name, self.shape, self.dtype = name, shape, dtype

        class Network:
            def __init__(self):
                self.inputs, self.outputs, self.path = [], [], None

            @property
            def num_inputs(self):
                return len(self.inputs)

            def get_input(self, i):
                return self.inputs[i]

        class OnnxParser:
            def __init__(self, network, logger):
                self.network, self.errors = network, []

            def parse_from_file(self, path):
                import onnx
                try:
                    model = onnx.load(path)
                except Exception as exc:
                    self.errors.append(str(exc))
                    return False
                init = {t.name for t in model.graph.initializer}

                def tensor(v):
                    dims = tuple(d.dim_value if d.HasField("dim_value") else -1
                                 for d in v.type.tensor_type.shape.dim)
                    return Tensor(v.name, dims, np.dtype(_ONNX_NP[v.type.tensor_type.elem_type]))

                self.network.inputs = [tensor(v) for v in model.graph.input if v.name not in init]
                self.network.outputs = [tensor(v) for v in model.graph.output]
                self.network.path = path
                return True

            @property
            def num_errors(self):
                return len(self.errors)

            def get_error(self, i):
                return self.errors[i]

        class Profile:
            def __init__(self):
                self.shapes = {}

            def set_shape(self, name, mn, opt, mx):
                self.shapes[name] = (tuple(mn), tuple(opt), tuple(mx))

        class Config:
            def __init__(self):
                self.flags, self.profiles, self.pool = {trt.BuilderFlag.TF32}, [], {}   # TF32: on by default
                self.int8_calibrator = None
                self.progress_monitor = None
                self.calibration_profile = None

            def set_memory_pool_limit(self, kind, size):
                self.pool[kind] = size

            def set_flag(self, flag):
                self.flags.add(flag)

            def clear_flag(self, flag):
                self.flags.discard(flag)

            def add_optimization_profile(self, profile):
                self.profiles.append(profile)
                return len(self.profiles) - 1

            def set_calibration_profile(self, profile):
                self.calibration_profile = profile

        class Builder:
            platform_has_fast_fp16 = True

            def __init__(self, logger):
                pass

            def create_network(self, flags=0):
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                trt.builds += 1
                trt.configs.append(config)
                mon = config.progress_monitor
                if mon is not None:
                    mon.phase_start("Building engine", None, 2)
                    for i in range(2):
                        assert mon.step_complete("Building engine", i) is True
                    mon.phase_finish("Building engine")
                    trt.phases.append("Building engine")
                shapes = {t.name: (config.profiles[0].shapes[t.name] if t.shape[0] < 0 else (t.shape,) * 3)
                          for t in network.inputs}
                calib = config.int8_calibrator
                if trt.BuilderFlag.INT8 in config.flags and calib is not None:
                    # TensorRT's order: use the cache if there is one, else pull batches, then save
                    if calib.read_calibration_cache() is None:
                        names = [t.name for t in network.inputs]
                        first = network.inputs[0]
                        shape = (calib.get_batch_size(),) + tuple(first.shape[1:])
                        while (ptrs := swallowed(calib.get_batch, names)) is not None:
                            n = int(np.prod(shape)) * first.dtype.itemsize
                            raw = np.ctypeslib.as_array(ctypes.cast(int(ptrs[0]), ctypes.POINTER(ctypes.c_uint8)), (n,))
                            trt.calibration_batches.append(raw.view(first.dtype).reshape(shape).copy())
                        stamp = str(len(trt.calibration_batches)).encode()
                        swallowed(calib.write_calibration_cache, b"TRT-fake-calibration " + stamp)
                return json.dumps({"path": network.path, "profile": shapes}).encode()

        class Context:
            def __init__(self, engine):
                self.engine, self.shapes, self.addresses = engine, {}, {}

            def set_input_shape(self, name, shape):
                mn, _, mx = self.engine.profile[name]
                shape = tuple(int(d) for d in shape)
                if len(shape) != len(mx) or any(not lo <= d <= hi for d, lo, hi in zip(shape, mn, mx)):
                    return False
                self.shapes[name] = shape
                return True

            def get_tensor_shape(self, name):
                if name in self.engine.input_names:
                    return self.shapes[name]
                batch = next(iter(self.shapes.values()))[0]
                dims = self.engine.declared[name]
                if any(d < 0 for d in dims[1:]):    # a computed dimension: shape inference, as TensorRT does
                    return self._inferred(name)
                return tuple(batch if d < 0 else d for d in dims)

            def _inferred(self, name):
                feeds = {n: np.zeros(self.shapes[n], self.engine.dtypes[n]) for n in self.engine.input_names}
                outs = dict(zip(self.engine.output_names, self.engine.session.run(None, feeds)))
                return tuple(outs[name].shape)

            def set_tensor_address(self, name, ptr):
                self.addresses[name] = int(ptr)
                return True

            def execute_async_v3(self, stream_handle):
                assert isinstance(stream_handle, int)
                feeds = {}
                for name in self.engine.input_names:
                    shape, dtype = self.shapes[name], self.engine.dtypes[name]
                    n = int(np.prod(shape)) * dtype.itemsize
                    raw = np.ctypeslib.as_array(ctypes.cast(self.addresses[name], ctypes.POINTER(ctypes.c_uint8)), (n,))
                    feeds[name] = raw.view(dtype).reshape(shape).copy()
                outs = self.engine.session.run(None, feeds)
                for name, value in zip(self.engine.output_names, outs):
                    value = np.ascontiguousarray(value, self.engine.dtypes[name])
                    ctypes.memmove(self.addresses[name], value.ctypes.data, value.nbytes)
                return True

        class Engine:
            def __init__(self, plan):
                import onnxruntime as ort
                self.path, self.profile = plan["path"], {k: tuple(map(tuple, v)) for k, v in plan["profile"].items()}
                self.session = ort.InferenceSession(self.path, providers=["CPUExecutionProvider"])
                self.input_names = [i.name for i in self.session.get_inputs()]
                self.output_names = [o.name for o in self.session.get_outputs()]
                net, parser = Network(), OnnxParser(Network(), None)
                parser.network = net
                parser.parse_from_file(self.path)
                self.declared = {t.name: t.shape for t in net.inputs + net.outputs}
                self.dtypes = {t.name: t.dtype for t in net.inputs + net.outputs}
                self.names = self.input_names + self.output_names

            @property
            def num_io_tensors(self):
                return len(self.names)

            def get_tensor_name(self, i):
                return self.names[i]

            def get_tensor_shape(self, name):
                return self.declared[name]

            def get_tensor_dtype(self, name):
                return self.dtypes[name]

            def get_tensor_mode(self, name):
                return trt.TensorIOMode.INPUT if name in self.input_names else trt.TensorIOMode.OUTPUT

            def get_tensor_profile_shape(self, name, index):
                return list(self.profile[name])

            def create_execution_context(self):
                return Context(self)

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                try:
                    return Engine(json.loads(bytes(data)))
                except (ValueError, KeyError):
                    return None

        self.Builder, self.OnnxParser, self.Runtime = Builder, OnnxParser, Runtime


def install(monkeypatch, cudart: FakeCudart | None = None) -> tuple[FakeTensorRT, FakeCudart]:
    """Put the fakes in sys.modules for one test."""
    trt, cudart = FakeTensorRT(), cudart or FakeCudart()
    cuda_pkg = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    cuda_pkg.bindings = bindings
    for name, mod in {"tensorrt": trt, "cuda": cuda_pkg, "cuda.bindings": bindings,
                      "cuda.bindings.runtime": cudart}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return trt, cudart

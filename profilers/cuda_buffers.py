"""Device buffers for the TensorRT profiler: one small interface, three CUDA libraries.

UNVERIFIED: no CUDA device was available where this was written. Each backend imports its library
lazily in __init__, so importing this module needs none of them, and torch is imported only when the
torch backend is chosen (the profilers stay torch-free otherwise).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import ProfilerError


class DeviceBackend:
    """Device memory and a stream. Subclasses import their CUDA library lazily in __init__."""

    name = "abstract"

    def alloc(self, nbytes: int) -> int:
        """Allocate `nbytes` on the device; returns the device pointer. Freed by close()."""
        raise NotImplementedError

    def upload(self, ptr: int, host: np.ndarray) -> None:
        """Copy a host array to the device and wait for the copy."""
        raise NotImplementedError

    def download(self, host: np.ndarray, ptr: int) -> None:
        """Copy device memory into a (contiguous) host array and wait for the copy."""
        raise NotImplementedError

    @property
    def stream_handle(self) -> int:
        """The raw cudaStream_t, as TensorRT's execute_async_v3 takes it."""
        raise NotImplementedError

    def synchronize(self) -> None:
        raise NotImplementedError

    def device_name(self) -> str | None:
        return None

    def close(self) -> None:
        pass


class PycudaBackend(DeviceBackend):
    name = "pycuda"

    def __init__(self) -> None:
        import pycuda.driver as cuda

        self._cuda = cuda
        cuda.init()
        self._device = cuda.Device(0)
        # TensorRT uses the CUDA runtime, which works in the primary context: share it.
        self._ctx = self._device.retain_primary_context()
        self._ctx.push()
        self._stream = cuda.Stream()
        self._allocs: list[Any] = []

    def alloc(self, nbytes: int) -> int:
        mem = self._cuda.mem_alloc(max(1, nbytes))
        self._allocs.append(mem)
        return int(mem)

    def upload(self, ptr: int, host: np.ndarray) -> None:
        self._cuda.memcpy_htod_async(ptr, np.ascontiguousarray(host), self._stream)
        self._stream.synchronize()

    def download(self, host: np.ndarray, ptr: int) -> None:
        self._cuda.memcpy_dtoh_async(host, ptr, self._stream)
        self._stream.synchronize()

    @property
    def stream_handle(self) -> int:
        return int(self._stream.handle)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def device_name(self) -> str | None:
        return str(self._device.name())

    def close(self) -> None:
        for mem in self._allocs:
            mem.free()
        self._allocs.clear()
        self._ctx.pop()


class CudaPythonBackend(DeviceBackend):
    name = "cuda-python"

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
        except ImportError:
            from cuda import cudart  # older cuda-python
        self._rt = cudart
        self._stream = self._check(cudart.cudaStreamCreate())
        self._allocs: list[int] = []

    def _check(self, result: Any) -> Any:
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise ProfilerError(f"CUDA runtime call failed: {getattr(err, 'name', err)}")
        return rest[0] if len(rest) == 1 else (rest or None)

    def alloc(self, nbytes: int) -> int:
        ptr = int(self._check(self._rt.cudaMalloc(max(1, nbytes))))
        self._allocs.append(ptr)
        return ptr

    def upload(self, ptr: int, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host)
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._check(self._rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, self._stream))
        self.synchronize()

    def download(self, host: np.ndarray, ptr: int) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._check(self._rt.cudaMemcpyAsync(host.ctypes.data, ptr, host.nbytes, kind, self._stream))
        self.synchronize()

    @property
    def stream_handle(self) -> int:
        return int(self._stream)

    def synchronize(self) -> None:
        self._check(self._rt.cudaStreamSynchronize(self._stream))

    def device_name(self) -> str | None:
        props = self._check(self._rt.cudaGetDeviceProperties(0))
        name = getattr(props, "name", b"")
        return name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)

    def close(self) -> None:
        for ptr in self._allocs:
            self._rt.cudaFree(ptr)
        self._allocs.clear()
        self._rt.cudaStreamDestroy(self._stream)


class TorchBackend(DeviceBackend):
    """CUDA memory as torch uint8 tensors, for devices where torch is installed anyway."""

    name = "torch"

    def __init__(self) -> None:
        import torch  # lazy: only this backend may import torch

        if not torch.cuda.is_available():
            raise ProfilerError("torch is installed but torch.cuda.is_available() is False")
        self._torch = torch
        self._stream = torch.cuda.Stream()
        self._tensors: list[Any] = []

    def alloc(self, nbytes: int) -> int:
        t = self._torch.empty(max(1, nbytes), dtype=self._torch.uint8, device="cuda")
        self._tensors.append(t)
        return int(t.data_ptr())

    def _tensor_at(self, ptr: int) -> Any:
        for t in self._tensors:
            if t.data_ptr() == ptr:
                return t
        raise ProfilerError(f"no torch buffer at device address {ptr:#x}")

    def upload(self, ptr: int, host: np.ndarray) -> None:
        src = self._torch.from_numpy(np.ascontiguousarray(host).reshape(-1).view(np.uint8))
        dst = self._tensor_at(ptr)
        with self._torch.cuda.stream(self._stream):
            dst[: src.numel()].copy_(src)
        self._stream.synchronize()

    def download(self, host: np.ndarray, ptr: int) -> None:
        src = self._tensor_at(ptr)
        with self._torch.cuda.stream(self._stream):
            data = src[: host.nbytes].cpu()
        self._stream.synchronize()
        host.reshape(-1).view(np.uint8)[:] = data.numpy()

    @property
    def stream_handle(self) -> int:
        return int(self._stream.cuda_stream)

    def synchronize(self) -> None:
        self._stream.synchronize()

    def device_name(self) -> str | None:
        return str(self._torch.cuda.get_device_name(0))

    def close(self) -> None:
        self._tensors.clear()


# name -> backend class; "auto" tries them in this order
BACKENDS: dict[str, type[DeviceBackend]] = {
    "pycuda": PycudaBackend,
    "cuda-python": CudaPythonBackend,
    "torch": TorchBackend,
}


def open_backend(name: str = "auto") -> DeviceBackend:
    """Open the named device-buffer backend, or the first one that works ("auto")."""
    if name != "auto" and name not in BACKENDS:
        raise ProfilerError(f"unknown device backend {name!r}; use auto or one of {sorted(BACKENDS)}")
    candidates = list(BACKENDS) if name == "auto" else [name]
    failures = []
    for cand in candidates:
        try:
            return BACKENDS[cand]()
        except ProfilerError as exc:
            failures.append(f"{cand}: {exc}")
        except Exception as exc:  # ImportError, CUDA driver errors
            failures.append(f"{cand}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    raise ProfilerError(
        "no CUDA device-buffer backend works here ("
        + "; ".join(failures)
        + "); install pycuda or cuda-python"
    )

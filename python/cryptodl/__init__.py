"""cryptodl: classify encrypted images with convolutional networks (RNS-CKKS), on the CPU or
any GPU, from Python.

The Rust engine does the work (the GIL is released while it does); every object reads and
writes the same files as the ``cryptodl`` command line, so a job can start here and finish
with the CLI, and back::

    import numpy as np, cryptodl
    model = cryptodl.Model.load("m.safetensors")
    cryptodl.keygen("keys", model=model)
    client = cryptodl.Client("keys")
    client.encrypt(model, images, "enc")                      # uint8 N x C x H x W
    cryptodl.Server("m.safetensors", "keys/eval.keys").score("enc", "scored")
    logits = client.decrypt("scored")                         # N x classes
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from . import _cryptodl
from ._cryptodl import (
    CryptodlError,
    DeviceError,
    InputError,
    IntegrityError,
    Model,
    __version__,
)

__all__ = [
    "Client",
    "CryptodlError",
    "DeviceError",
    "InputError",
    "IntegrityError",
    "Model",
    "Server",
    "devices",
    "from_torch",
    "keygen",
    "params",
    "plan",
    "__version__",
]

Path = Union[str, "os.PathLike[str]"]
Progress = Union[None, bool, Callable[[int, int], Any]]


def _progress(progress: Progress, what: str) -> Optional[Callable[[int, int], Any]]:
    """A callback from `progress`: a callable as is, ``True`` for a tqdm bar (when tqdm is
    installed), ``None`` / ``False`` for none."""
    if progress is None or progress is False:
        return None
    if callable(progress):
        return progress
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    bar = tqdm(desc=what, unit="step")

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    return update


def _images(images: Any) -> np.ndarray:
    """`images` as a C-contiguous numpy array of uint8, float32 or float64 (no copy when it is
    one already); other dtypes are refused with what to do."""
    a = np.asarray(images)
    if a.dtype not in (np.uint8, np.float32, np.float64):
        raise InputError(
            f"images of dtype {a.dtype}: give uint8 pixels (0..255) or float32 / float64 in "
            "[0, 1] (pixel / 255, as torchvision's ToTensor)"
        )
    return np.ascontiguousarray(a)


def devices() -> List[Dict[str, Any]]:
    """Every GPU adapter wgpu sees, with the limits that matter (as ``cryptodl devices``)."""
    return json.loads(_cryptodl.devices_json())


def params() -> List[Dict[str, Any]]:
    """The CKKS parameter presets: ring size, levels, modulus bits, security."""
    return json.loads(_cryptodl.params_json())


def plan(
    model: Model,
    *,
    preset: Optional[str] = None,
    packing: str = "batch",
    insecure: bool = False,
) -> Dict[str, Any]:
    """What `model` costs encrypted, as ``cryptodl plan``: the preset (the smallest 128-bit one
    deep enough unless named), levels, ciphertexts per batch or image, its steps, and in
    latency packing the rotations the evaluation keys need."""
    return json.loads(
        _cryptodl.plan_json(model, preset=preset, packing=packing, insecure=insecure)
    )


def keygen(
    out: Path,
    *,
    preset: Optional[str] = None,
    model: Optional[Model] = None,
    packing: str = "batch",
    insecure: bool = False,
) -> Dict[str, Any]:
    """Makes a key directory, as ``cryptodl keygen``: ``out/secret.key`` (keep it),
    ``out/public.key`` and ``out/eval.keys`` (the only file the server gets). With `model`
    the preset is the smallest 128-bit one deep enough for it (and, in latency packing, the
    evaluation keys hold its rotations). Presets below 128-bit security need
    ``insecure=True``. Returns what was made (key set, preset, sizes)."""
    return json.loads(
        _cryptodl.keygen_json(
            os.fspath(out), preset=preset, model=model, packing=packing, insecure=insecure
        )
    )


class Client:
    """The client: encrypts images under its keys and decrypts the server's logits. The
    secret key never leaves `keys`."""

    def __init__(self, keys: Path, *, insecure: bool = False) -> None:
        self.keys = os.fspath(keys)
        self.insecure = insecure

    def encrypt(
        self,
        model: Model,
        images: Any,
        out: Path,
        *,
        labels: Optional[Sequence[int]] = None,
        packing: str = "batch",
        progress: Progress = None,
    ) -> Dict[str, Any]:
        """Encrypts `images` (N x C x H x W, or N x H x W for one channel; uint8, or float in
        [0, 1]) for `model` into the job directory `out`, as ``cryptodl encrypt --input``:
        batch files and the manifest for the server, the image names and `labels` in the
        client's record beside the keys. Returns the job (id, batches, ...)."""
        a = _images(images)
        lab = None if labels is None else [int(x) for x in np.asarray(labels).ravel()]
        if lab is not None and any(x < 0 or x > 255 for x in lab):
            raise InputError("labels must be class indices 0..255")
        return json.loads(
            _cryptodl.encrypt_json(
                self.keys,
                model,
                a,
                os.fspath(out),
                labels=lab,
                packing=packing,
                insecure=self.insecure,
                progress=_progress(progress, "encrypt"),
            )
        )

    def decrypt(self, scored: Path, *, progress: Progress = None) -> np.ndarray:
        """The logits of the scored job in `scored` (N x classes, float64, in job order), as
        ``cryptodl decrypt``: every file checked to be of this key set, job and model."""
        return _cryptodl.decrypt(
            self.keys,
            os.fspath(scored),
            insecure=self.insecure,
            progress=_progress(progress, "decrypt"),
        )


class Server:
    """The server: scores encrypted jobs with the model file and the evaluation keys only."""

    def __init__(
        self,
        model: Path,
        eval_keys: Path,
        *,
        device: str = "cpu",
        adapter: Optional[str] = None,
        insecure: bool = False,
    ) -> None:
        if device not in ("cpu", "gpu", "auto"):
            raise InputError(f'device {device!r}: use "cpu", "gpu" or "auto"')
        self.model = os.fspath(model)
        self.eval_keys = os.fspath(eval_keys)
        self.device = device
        self.adapter = adapter
        self.insecure = insecure

    def score(self, job: Path, out: Path, *, progress: Progress = None) -> Dict[str, Any]:
        """Scores the job in `job` into `out`, as ``cryptodl score``: batches already scored
        there are skipped (a re-run resumes). Returns what was done (batches, seconds)."""
        return json.loads(
            _cryptodl.score_json(
                self.model,
                self.eval_keys,
                os.fspath(job),
                os.fspath(out),
                device=self.device,
                adapter=self.adapter,
                insecure=self.insecure,
                progress=_progress(progress, "score"),
            )
        )


def from_torch(
    module: Any,
    input_shape: Sequence[int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    name: Optional[str] = None,
) -> Model:
    """A PyTorch module (polynomial activations) as a cryptodl model: exported with
    ``torch.onnx.export`` and imported as ``cryptodl import`` does (`mean` / `std` per channel
    of pixel / 255). Needs torch (and what its ONNX exporter needs: onnx, onnxscript)."""
    import tempfile

    import torch

    c, h, w = (int(x) for x in input_shape)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "model.onnx")
        was_training = module.training
        module.eval()
        try:
            torch.onnx.export(
                module,
                (torch.zeros(1, c, h, w),),
                path,
                input_names=["image"],
                output_names=["logits"],
            )
        finally:
            module.train(was_training)
        return Model.import_onnx(
            path, mean=list(mean), std=list(std), input_shape=(c, h, w), name=name
        )

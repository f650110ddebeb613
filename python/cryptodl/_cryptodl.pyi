"""Type stubs of the Rust extension `cryptodl._cryptodl` (use the `cryptodl` package)."""

from os import PathLike
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

_Path = Union[str, PathLike[str]]
_Progress = Optional[Callable[[int, int], Any]]

__version__: str

class CryptodlError(Exception):
    """Base class of every cryptodl error (its message is the CLI's)."""

class InputError(CryptodlError):
    """Bad input: arrays of the wrong dtype or shape, a model deeper than the parameters, a
    file that is not what it should be, an output that would replace an input."""

class IntegrityError(CryptodlError):
    """Files that do not belong together or were damaged."""

class DeviceError(CryptodlError):
    """No usable GPU adapter, or the device failed."""

class Model:
    """A trained model with polynomial activations."""

    @staticmethod
    def load(path: _Path) -> "Model": ...
    @staticmethod
    def demo() -> "Model": ...
    @staticmethod
    def import_onnx(
        path: _Path,
        mean: Optional[Sequence[float]] = None,
        std: Optional[Sequence[float]] = None,
        input_shape: Optional[Tuple[int, int, int]] = None,
        name: Optional[str] = None,
    ) -> "Model": ...
    def save(self, path: _Path) -> None: ...
    @property
    def name(self) -> str: ...
    @property
    def input_shape(self) -> Tuple[int, int, int]: ...
    @property
    def classes(self) -> int: ...
    def predict(self, images: npt.ArrayLike) -> npt.NDArray[np.float64]: ...

def devices_json() -> str: ...
def params_json() -> str: ...
def plan_json(
    model: Model, preset: Optional[str] = None, packing: str = "batch", insecure: bool = False
) -> str: ...
def keygen_json(
    out: _Path,
    preset: Optional[str] = None,
    model: Optional[Model] = None,
    packing: str = "batch",
    insecure: bool = False,
) -> str: ...
def encrypt_json(
    keys: _Path,
    model: Model,
    images: npt.NDArray[Any],
    out: _Path,
    labels: Optional[Sequence[int]] = None,
    packing: str = "batch",
    insecure: bool = False,
    progress: _Progress = None,
) -> str: ...
def decrypt(
    keys: _Path, scored: _Path, insecure: bool = False, progress: _Progress = None
) -> npt.NDArray[np.float64]: ...
def score_json(
    model: _Path,
    eval_keys: _Path,
    job: _Path,
    out: _Path,
    device: str = "cpu",
    adapter: Optional[str] = None,
    insecure: bool = False,
    progress: _Progress = None,
) -> str: ...

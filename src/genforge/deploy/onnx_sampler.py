"""Diffusion sampling with numpy and onnxruntime: the exported denoiser plus the diffusion
family's step functions (`models.diffusion.samplers`), which work on numpy arrays unchanged.

    sampler = OnnxDiffusionSampler("ddpm.onnx")      # written by `genforge export --format onnx`
    images = sampler.sample(16, seed=0, steps=50)     # float32 (n, C, H, W) in [-1, 1]

With eta = 0 (DDIM's default) the only randomness is x_T, so `sample(..., x_T=...)` with the
x_T that PyTorch drew gives PyTorch's images (up to float rounding).

Audio diffusion exports (`diffwave`, deploy/export_audio.py) work the same way: their settings
give the sample shape (`sample_shape`: (T,)) and a second condition, `speakers`, with its own
null id; `sample` then returns waves (n, T).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genforge.core.errors import GenforgeError
from genforge.deploy.export import sidecar_path
from genforge.models.diffusion.samplers import SAMPLERS, guide, sample_timesteps
from genforge.models.diffusion.schedule import PREDICTIONS

# condition inputs of an exported denoiser -> the settings key of the id meaning "no condition"
NULL_IDS = {"labels": "null_label", "speakers": "null_speaker"}


class OnnxDiffusionSampler:
    def __init__(self, path: str | Path, threads: int = 0):
        import onnxruntime as ort

        path = Path(path)
        meta_path = sidecar_path(path)
        if not path.is_file() or not meta_path.is_file():
            raise GenforgeError(
                f"{path}: need the .onnx file and its {meta_path.name} (from `genforge export`)"
            )
        self.meta = json.loads(meta_path.read_text())
        # the family's settings (OUT.json's entry under the family's name) hold the schedule
        d = self.meta.get(str(self.meta.get("family")))
        if self.meta.get("format") != "onnx" or not isinstance(d, dict) or "schedule_file" not in d:
            raise GenforgeError(f"{path}: not an ONNX export of a diffusion model ({meta_path.name})")
        self.settings = d
        with np.load(path.with_name(d["schedule_file"])) as tables:
            self.alpha_bar = np.asarray(tables["alpha_bar"], dtype=np.float64)
        self.prediction = PREDICTIONS.get(d["prediction"])
        self.input_names = [i["name"] for i in self.meta["inputs"]]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        if "sample_shape" in d:
            self.shape = tuple(int(k) for k in d["sample_shape"])
        else:  # an image export: (H, W, C) images, (C, H, W) samples
            h, w, c = self.meta["image_shape"]
            self.shape = (c, h, w)

    @property
    def conditional(self) -> bool:
        return "labels" in self.input_names

    def _conditions(self, n: int, given: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every condition input of the network: the given ids, else the null ones."""
        return {
            name: given[name] if name in given else np.full(n, self.settings[key], np.int64)
            for name, key in NULL_IDS.items()
            if name in self.input_names
        }

    def _net(self, x: np.ndarray, t: int, conditions: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {"x_t": x, "t": np.full((len(x),), t, dtype=np.int64), **conditions}
        return self.session.run(None, feeds)[0]

    def _predict(self, x: np.ndarray, t: int, given: dict[str, np.ndarray], scale: float) -> np.ndarray:
        """As DDPM.predict (DiffWave.predict): guided towards the `given` conditions with
        classifier-free guidance `scale`."""
        cond = self._conditions(len(x), given)
        if not given or scale == 1.0:
            return self._net(x, t, cond)
        null = self._conditions(len(x), {})
        both = {name: np.concatenate([cond[name], null[name]]) for name in cond}
        out_cond, uncond = np.split(self._net(np.concatenate([x, x]), t, both), 2)
        return guide(out_cond, uncond, scale)

    def sample(
        self,
        n: int,
        seed: int = 0,
        steps: int | None = None,
        labels: np.ndarray | None = None,
        speakers: np.ndarray | None = None,
        guidance: float | None = None,
        eta: float | None = None,
        sampler: str = "ddim",
        x_T: np.ndarray | None = None,
    ) -> np.ndarray:
        """n images, float32 (n, C, H, W) in [-1, 1] (audio: waves (n, T))."""
        d = self.settings
        spec = SAMPLERS.get(sampler)
        timesteps = int(d["timesteps"])
        steps = int(steps or (timesteps if spec.full_chain else d["sample_steps"]))
        eta = float(d["eta"] if eta is None else eta)
        scale = float(d["guidance_scale"] if guidance is None else guidance)
        given = {}
        for name, ids in (("labels", labels), ("speakers", speakers)):
            if ids is None:
                continue
            if name not in self.input_names:
                raise GenforgeError(
                    f"this diffusion model is not conditioned on {name}; sample it without them"
                )
            given[name] = np.asarray(ids, dtype=np.int64).reshape(n)
        rng = np.random.default_rng(seed)
        x = (
            rng.standard_normal((n, *self.shape)).astype(np.float32)
            if x_T is None
            else np.asarray(x_T, np.float32)
        )
        ts = sample_timesteps(timesteps, steps)
        for i, t in enumerate(ts.tolist()):
            ab = float(self.alpha_bar[t])
            ab_prev = float(self.alpha_bar[ts[i + 1]]) if i + 1 < len(ts) else 1.0
            eps = self.prediction.to_eps(x, self._predict(x, t, given, scale), ab)
            noise = rng.standard_normal(x.shape).astype(np.float32) if spec.needs_noise(eta) else None
            x = spec.step(x, eps, ab, ab_prev, eta=eta, noise=noise, clip=bool(d["clip_x0"])).astype(
                np.float32
            )
        return np.clip(x, -1.0, 1.0)

    def images(self, n: int, seed: int = 0, **kwargs) -> np.ndarray:
        """As `sample`, but uint8 (n, H, W, C) like `Pipeline.generate`."""
        x = self.sample(n, seed, **kwargs)
        return np.round((x + 1.0) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)

"""ResGrad's comparison, end to end: corpus, a frozen FastSpeech 2, three refiners, the quality-RTF curve.

The claims of ResGrad (Chen et al. 2022, arXiv 2212.14518), made measurable on held-out utterances:
* C3: ResGrad at a few steps improves on FastSpeech 2 alone (lower MCD, global variance closer to
  the recordings') with FastSpeech 2 frozen;
* C1: at the same number of denoiser calls (the same real-time factor: all refiners have one size),
  ResGrad beats full-mel diffusion (the Grad-TTS / DiffSpeech target, same conditioning) and shallow
  diffusion (DiffSpeech, Liu et al. 2022, arXiv 2105.02446: start from FastSpeech 2's mel noised to
  step k and denoise with the full-mel model);
* C2: full-mel diffusion needs >= 10x ResGrad's RTF to reach ResGrad's MCD (or never does within the
  sweep; the report says which).
Two test conditions: `aligned` (FastSpeech 2 fed the recording's durations, pitch and energy, so every
frame lines up and MCD needs no alignment) and `tts` (everything predicted, as a user hears it; MCD and
F0 error along a DTW path). Audio, F0 and DNSMOS use the vocoder on a subset of utterances.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from frugal.scripts.data import user_cache_dir
from frugal.scripts.report import machine_description, machine_record
from frugal.scripts.systems.resgrad import corpus as corpus_mod
from frugal.scripts.systems.resgrad import features, metrics, training
from frugal.scripts.systems.resgrad.config import ResGradConfig
from frugal.transforms import diffusion, prng

HOP, SAMPLE_RATE = 256, 22050
CORPUS_FIELDS = ("corpus_dir", "train_sentences", "test_sentences", "corpus_seed", "noise_scale", "noise_w")
FS2_FIELDS = ("fs2_size", "fs2_steps", "fs2_batch", "fs2_lr", "fs2_buckets", "seed")
REFINER_FIELDS = (
    "denoiser",
    "channels",
    "layers",
    "diffusion_steps",
    "schedule",
    "parameterization",
    "loss",
    "denoiser_steps",
    "denoiser_batch",
    "segment_frames",
    "denoiser_lr",
    "seed",
)


def _digest(config: ResGradConfig, fields) -> str:
    payload = json.dumps({f: getattr(config, f) for f in fields}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def run_root(config: ResGradConfig) -> Path:
    """The cache folder of one (corpus, FastSpeech 2) setting: its checkpoints and feature statistics.
    The refiners live in `refiner_root`, below it, so a new refiner setting reuses the trained
    FastSpeech 2."""
    return user_cache_dir() / "resgrad" / "runs" / f"{_digest(config, CORPUS_FIELDS)}-{_digest(config, FS2_FIELDS)}"


def refiner_root(config: ResGradConfig) -> Path:
    """The cache folder of one refiner setting on `run_root`'s FastSpeech 2."""
    return run_root(config) / f"refiners-{_digest(config, REFINER_FIELDS)}"


# --------------------------------------------------------------------------------------------
# Corpus


def load_data(config: ResGradConfig, say: Callable[[str], None]) -> tuple[dict, dict]:
    """(splits {"train": [...], "test": [...]}, corpus facts) from the user's folder or the built-in corpus."""
    if config.corpus_dir is not None:
        path = Path(config.corpus_dir)
        splits = corpus_mod.load_corpus(path)
        if not splits.get("train"):
            raise ValueError(f"corpus_dir {path} has no training utterances (phonemes.tsv split column 'train')")
        test = splits.get("test") or splits.get("valid") or []
        if not test:
            raise ValueError(f"corpus_dir {path} has no held-out utterances (split 'test' or 'valid')")
        return {"train": splits["train"], "test": test}, {"source": str(path)}
    from frugal.scripts.systems.resgrad.phonemize import builtin_sentences

    sentences = builtin_sentences()
    train = [s for s in sentences if s.split == "train"][: config.train_sentences]
    test = [s for s in sentences if s.split == "test"][: config.test_sentences]
    say(f"corpus: {len(train)} + {len(test)} sentences spoken by the Piper joe voice (cached after the first run)")
    path = corpus_mod.ensure_corpus(
        train + test,
        seed=config.corpus_seed,
        noise_scale=config.noise_scale,
        noise_w=config.noise_w,
        progress=config.progress,
    )
    splits = corpus_mod.load_corpus(path)
    return {"train": splits["train"], "test": splits["test"]}, {"source": "built-in", "path": str(path)}


def corpus_facts(splits: dict) -> dict:
    out = {}
    for name, utts in splits.items():
        frames = np.asarray([u.mel.shape[0] for u in utts])
        out[name] = {
            "utterances": len(utts),
            "hours": float(frames.sum() * HOP / SAMPLE_RATE / 3600),
            "mean_seconds": float(frames.mean() * HOP / SAMPLE_RATE) if len(frames) else 0.0,
        }
    return out


def run_corpus(config: ResGradConfig, say=print) -> dict:
    splits, source = load_data(config, say)
    return {"corpus": {**source, **corpus_facts(splits)}}


# --------------------------------------------------------------------------------------------
# Training (cached in run_root)


@dataclasses.dataclass
class Models:
    fs2: object
    stats: training.FeatureStats
    refiners: dict  # name -> denoiser
    histories: dict
    schedule: diffusion.Schedule
    samplers: dict = dataclasses.field(default_factory=dict)  # refiner name -> compiled DDIM sampler

    def sampler(self, kind: str, config: ResGradConfig):
        if kind not in self.samplers:
            self.samplers[kind] = training.make_sampler(
                self.refiners[kind],
                self.schedule,
                parameterization=config.parameterization,
                eta=config.eta,
                clip=config.clip,
            )
        return self.samplers[kind]


def vocab_size(splits) -> int:
    """Piper's en-us phoneme map (FastSpeech2Config's default, 151) or more when a user's ids need it."""
    from frugal.models.fastspeech2 import FastSpeech2Config

    largest = max(int(u.phoneme_ids.max()) for u in splits["train"] + splits["test"])
    return max(largest + 1, FastSpeech2Config().vocab_size)


def train_models(config: ResGradConfig, splits: dict, say: Callable[[str], None]) -> Models:
    root = run_root(config)
    stats = training.compute_stats(splits["train"])
    model_cfg = training.fs2_config(config.fs2_size, vocab_size(splits), stats)
    from flax import nnx

    from frugal.models.fastspeech2 import FastSpeech2

    say(f"FastSpeech 2 ({config.fs2_size}): {config.fs2_steps} steps")
    fs2, fs2_history = training.train_fs2(
        FastSpeech2(model_cfg, rngs=nnx.Rngs(config.seed)),
        training.buckets(splits["train"], stats, config.fs2_buckets),
        steps=config.fs2_steps,
        batch=config.fs2_batch,
        lr=config.fs2_lr,
        seed=config.seed,
        workdir=root / "fs2",
        progress=config.progress,
    )
    base = training.fs2_teacher_forced(fs2, splits["train"], stats)
    gts = [u.mel for u in splits["train"]]
    residual = np.concatenate([g - b for g, b in zip(gts, base)])
    stats.residual_std = (residual.std(0) + 1e-3).astype(np.float32)
    training.save_json(root / "stats.json", stats.to_json())
    conds = [training.normalize_mel(b, stats) for b in base]
    refiners, histories = {}, {"fs2": fs2_history}
    for kind in training.REFINERS:
        say(f"refiner {kind}: {config.denoiser_steps} steps")
        targets = [training.refiner_target(kind, g, b, stats) for g, b in zip(gts, base)]
        refiners[kind], histories[kind] = training.train_refiner(
            training.make_denoiser(
                config.denoiser, gts[0].shape[1], channels=config.channels, layers=config.layers, seed=config.seed
            ),
            conds,
            targets,
            schedule_kind=config.schedule,
            num_steps=config.diffusion_steps,
            parameterization=config.parameterization,
            loss=config.loss,
            steps=config.denoiser_steps,
            batch=config.denoiser_batch,
            segment=config.segment_frames,
            lr=config.denoiser_lr,
            seed=config.seed,
            workdir=refiner_root(config) / kind,
            progress=config.progress,
            label=f"refiner {kind}",
        )
    schedule = diffusion.make_schedule(config.schedule, config.diffusion_steps)
    return Models(fs2, stats, refiners, histories, schedule)


def _curve(history: list[dict]) -> list[list[float]]:
    return [[int(r["step"]), float(r["loss"])] for r in history if "loss" in r]


def run_train(config: ResGradConfig, say=print) -> dict:
    splits, source = load_data(config, say)
    models = train_models(config, splits, say)
    return {
        "corpus": {**source, **corpus_facts(splits)},
        "loss_curves": {k: _curve(h) for k, h in models.histories.items()},
        "fs2_cache": str(run_root(config)),
        "refiner_cache": str(refiner_root(config)),
    }


# --------------------------------------------------------------------------------------------
# Sampling


def _pad_batch(arrays: list[np.ndarray], frames: int) -> tuple[np.ndarray, np.ndarray]:
    out = np.zeros((len(arrays), frames, arrays[0].shape[1]), np.float32)
    mask = np.zeros((len(arrays), frames), bool)
    for i, a in enumerate(arrays):
        out[i, : a.shape[0]], mask[i, : a.shape[0]] = a, True
    return out, mask


SAMPLE_BATCH = 8  # utterances per sampler call in evaluation (the last call is padded to it)


def refine(
    models: Models, config: ResGradConfig, method: str, steps: int, bases: list[np.ndarray], seed: int
) -> list[np.ndarray]:
    """Log-mels of `method` ("resgrad", "full" or "shallow") at `steps` DDIM steps on FastSpeech 2 mels.

    Utterances are sorted by length and sampled `SAMPLE_BATCH` at a time, each batch padded to a
    multiple of `training.FRAME_BUCKET` frames, so an evaluation compiles a handful of shapes."""
    kind = "resgrad" if method == "resgrad" else "full"
    sampler = models.sampler(kind, config)
    out: list[np.ndarray | None] = [None] * len(bases)
    bucket = training.FRAME_BUCKET * (4 if config.denoiser == "unet" else 1)
    rows = min(SAMPLE_BATCH, len(bases))
    order = sorted(range(len(bases)), key=lambda i: bases[i].shape[0])
    for number, start in enumerate(range(0, len(order), rows)):
        idx = order[start : start + rows]
        frames = training.round_up(max(bases[i].shape[0] for i in idx), bucket)
        normalized = [training.normalize_mel(bases[i], models.stats) for i in idx]
        normalized += [np.zeros((0, bases[0].shape[1]), np.float32)] * (rows - len(idx))  # masked-out rows
        cond, mask = _pad_batch(normalized, frames)
        n_key, s_key = jax.random.split(jax.random.key(seed * 1_000_003 + number))
        noise = prng.normal(n_key, cond.shape)
        if method == "shallow":
            k = config.shallow_k
            t = jnp.full((rows,), k, jnp.int32)
            x_start = diffusion.q_sample(models.schedule, jnp.asarray(cond), t, noise)
            x0 = sampler(jnp.asarray(cond), jnp.asarray(mask), x_start, s_key, steps, k)
        else:
            x0 = sampler(jnp.asarray(cond), jnp.asarray(mask), noise, s_key, steps, None)
        x0 = np.asarray(x0)
        for row, i in enumerate(idx):
            n = bases[i].shape[0]
            out[i] = training.refiner_output(kind, x0[row, :n], bases[i], models.stats)
    return out


def method_steps(config: ResGradConfig) -> dict[str, list[int]]:
    return {
        "resgrad": list(config.sample_steps),
        "full": list(config.sample_steps),
        "shallow": [s for s in config.sample_steps if s <= config.shallow_k + 1],
    }


# --------------------------------------------------------------------------------------------
# Evaluation


def quality(refs: list[np.ndarray], outs: list[np.ndarray], *, aligned: bool) -> dict:
    if aligned:
        mcd = [metrics.mcd(r, o) for r, o in zip(refs, outs)]
        l1 = [metrics.log_mel_l1(r, o) for r, o in zip(refs, outs)]
    else:
        mcd = [metrics.mcd(r, o, align="dtw") for r, o in zip(refs, outs)]
        l1 = [float("nan")]
    ratio = metrics.gv_ratio(refs, outs)
    return {
        "mcd": float(np.mean(mcd)),
        "mcd_se": float(np.std(mcd) / np.sqrt(len(mcd))),
        "mcd_values": [float(v) for v in mcd],  # per utterance, for paired comparisons
        "mel_l1": float(np.mean(l1)),
        "gv_ratio": float(np.mean(ratio)),
        "gv_db": metrics.gv_ratio_db(ratio),
    }


def _time_best(fn, repeats: int = 2) -> float:
    jax.block_until_ready(fn())  # warm: compile outside the timing
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        best = min(best, time.perf_counter() - start)
    return best


def measure_rtf(models: Models, config: ResGradConfig, utts) -> dict:
    """Warm, jitted, batch 1: (FastSpeech 2 + sampler seconds) / seconds of audio, per method and steps."""
    fs2_seconds, audio_seconds, bases = 0.0, 0.0, []
    for u in utts:
        max_frames = training.round_up(int(u.mel.shape[0] * 1.5), training.FRAME_BUCKET)
        fs2_seconds += _time_best(lambda u=u, m=max_frames: training.fs2_infer(models.fs2, u.phoneme_ids, max_frames=m))
        base = training.fs2_infer(models.fs2, u.phoneme_ids, max_frames=max_frames)
        bases.append(base)
        audio_seconds += base.shape[0] * HOP / SAMPLE_RATE
    out = {"fs2": fs2_seconds / audio_seconds, "audio_seconds": audio_seconds}
    for method, step_list in method_steps(config).items():
        out[method] = {}
        for steps in step_list:
            total = sum(_time_best(lambda b=b: refine(models, config, method, steps, [b], config.seed)) for b in bases)
            out[method][str(steps)] = (fs2_seconds + total) / audio_seconds
    return out


# Log-mel values outside what speech produces (an untrained model's output) are clipped before
# vocoding: log(1e-5) is the front end's floor, and exp(4) is far above any real frame.
MEL_FLOOR, MEL_CEIL = float(np.log(1e-5)), 4.0


def _vocoder(name: str):
    if name == "griffin-lim":
        return lambda mel: features.griffin_lim(np.clip(mel, MEL_FLOOR, MEL_CEIL))
    from frugal.models.hifigan import HiFiGAN

    model = HiFiGAN.load("universal" if name == "hifigan-universal" else "LJSpeech")
    return lambda mel: model.vocode(np.clip(mel, MEL_FLOOR, MEL_CEIL))


def run_eval(config: ResGradConfig, say=print) -> dict:
    before = machine_description()
    splits, source = load_data(config, say)
    models = train_models(config, splits, say)
    test = splits["test"]
    say("timing (batch 1, warm)")
    rtf = measure_rtf(models, config, test[: config.rtf_utterances])
    rtf["load_average_after_timing"] = machine_description()["load_average"]
    say(f"evaluating on {len(test)} held-out utterances")
    conditions: dict = {}
    outputs: dict = {}
    for condition in config.conditions:
        conditions[condition], outputs[condition] = evaluate(models, config, test, condition, method_steps(config))
    figures = {
        "corpus": {**source, **corpus_facts(splits)},
        "conditions": conditions,
        "rtf": rtf,
        "loss_curves": {k: _curve(h) for k, h in models.histories.items()},
        "config": dataclasses.asdict(config),
    }
    figures["claims"] = claims(figures, config)
    audio_condition = "tts" if "tts" in outputs else "aligned"
    figures["audio"] = audio_report(config, test, outputs[audio_condition], say)
    figures["audio"]["condition"] = audio_condition
    outdir = Path(config.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    figures["plots"] = plots(figures, config, outdir, test, outputs.get("aligned", outputs[audio_condition]))
    figures["machine"] = machine_record(before)
    return figures


def fs2_bases(models: Models, test, condition: str) -> list[np.ndarray]:
    """FastSpeech 2's mels of the held-out utterances: teacher-forced (`aligned`) or free-running (`tts`)."""
    if condition == "aligned":
        return training.fs2_teacher_forced(models.fs2, test, models.stats)
    return [
        training.fs2_infer(
            models.fs2, u.phoneme_ids, max_frames=training.round_up(int(u.mel.shape[0] * 1.5), training.FRAME_BUCKET)
        )
        for u in test
    ]


def evaluate(
    models: Models, config: ResGradConfig, test, condition: str, steps: dict[str, list[int]]
) -> tuple[dict, dict]:
    """(quality rows {"fs2": ..., "resgrad@4": ...}, mels at `resgrad_steps` per method) of one condition."""
    bases = fs2_bases(models, test, condition)
    gts = [u.mel for u in test]
    aligned = condition == "aligned"
    rows = {"fs2": quality(gts, bases, aligned=aligned)}
    outputs = {"fs2": bases}
    for method, step_list in steps.items():
        for n in step_list:
            mels = refine(models, config, method, n, bases, config.seed)
            rows[f"{method}@{n}"] = quality(gts, mels, aligned=aligned)
            if n == config.resgrad_steps:
                outputs[method] = mels
    return rows, outputs


def paired_mcd(rows: dict, a: str, b: str) -> tuple[float, float]:
    """MCD of system `a` minus system `b` over the same utterances: (mean, standard error of the mean)."""
    d = np.asarray(rows[a]["mcd_values"]) - np.asarray(rows[b]["mcd_values"])
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), se


def _beats(rows: dict, a: str, b: str) -> tuple[bool, str]:
    """Whether `a`'s MCD is below `b`'s by more than two paired standard errors, and the difference."""
    diff, se = paired_mcd(rows, a, b)
    return bool(diff + 2 * se < 0), f"{diff:+.2f} ± {se:.2f}"


def claims(figures: dict, config: ResGradConfig) -> list[dict]:
    """The paper's three claims, checked per test condition with ResGrad at its few-step budget.

    "Beats" on MCD means lower by more than two standard errors of the per-utterance difference
    (the same utterances, so the comparison is paired). ResGrad's operating point is its lowest-MCD
    step count within `resgrad_steps`; C1 and C2 compare the other samplers with it.
    C3: some ResGrad setting within the budget beats FastSpeech 2 on MCD and brings the global
    variance closer to the recordings'. C1: at the operating point's step count (equal RTF: one
    denoiser size) ResGrad beats full-mel and shallow diffusion. C2: full-mel diffusion needs >= 10x
    ResGrad's RTF to reach its MCD, or never does within the sweep (the text says which, and how close
    full-mel came)."""
    out = []
    rtf = figures["rtf"]
    few = [s for s in config.sample_steps if s <= config.resgrad_steps]
    for condition, rows in figures["conditions"].items():
        fs2 = rows["fs2"]
        per_step = {}
        for s in few:
            beats, diff = _beats(rows, f"resgrad@{s}", "fs2")
            gv_closer = abs(rows[f"resgrad@{s}"]["gv_db"]) < abs(fs2["gv_db"])
            per_step[s] = {"beats_mcd": beats, "mcd_diff": diff, "gv_closer": gv_closer}
        wins = [s for s, r in per_step.items() if r["beats_mcd"] and r["gv_closer"]]
        if wins:
            s = wins[0]
            text = (
                f"ResGrad@{s} beats FastSpeech 2: MCD {per_step[s]['mcd_diff']}, GV "
                f"{rows[f'resgrad@{s}']['gv_db']:+.2f} vs {fs2['gv_db']:+.2f} dB"
            )
        else:
            text = f"no ResGrad setting of <= {config.resgrad_steps} steps beats FastSpeech 2 on both MCD and GV (" + (
                "; ".join(
                    f"{s}: MCD {r['mcd_diff']}, GV {rows[f'resgrad@{s}']['gv_db']:+.2f}" for s, r in per_step.items()
                )
                + f"; FastSpeech 2 GV {fs2['gv_db']:+.2f})"
            )
        out.append({"claim": "C3", "condition": condition, "text": text, "holds": bool(wins), "figures": per_step})

        n = min(few, key=lambda s: rows[f"resgrad@{s}"]["mcd"])
        res = rows[f"resgrad@{n}"]
        rivals = {m: f"{m}@{n}" for m in ("full", "shallow") if f"{m}@{n}" in rows}
        verdicts = {m: _beats(rows, f"resgrad@{n}", name) for m, name in rivals.items()}
        out.append(
            {
                "claim": "C1",
                "condition": condition,
                "text": f"at {n} steps (equal RTF), ResGrad's MCD minus the rival's: "
                + ", ".join(f"{m} {d}" for m, (_, d) in verdicts.items()),
                "holds": bool(len(verdicts) == 2 and all(b for b, _ in verdicts.values())),
                "figures": {"steps": n, **{m: d for m, (_, d) in verdicts.items()}},
            }
        )

        reach = [s for s in config.sample_steps if rows[f"full@{s}"]["mcd"] <= res["mcd"]]
        best = min(config.sample_steps, key=lambda s: rows[f"full@{s}"]["mcd"])
        if reach:
            ratio = rtf["full"][str(reach[0])] / rtf["resgrad"][str(n)]
            text = f"full-mel diffusion reaches ResGrad@{n}'s MCD at {reach[0]} steps, {ratio:.1f}x its RTF"
        else:
            ratio = None
            text = (
                f"full-mel diffusion never reaches ResGrad@{n}'s MCD ({res['mcd']:.2f}) within "
                f"{max(config.sample_steps)} steps; its best is {rows[f'full@{best}']['mcd']:.2f} at {best} "
                f"steps ({rtf['full'][str(best)] / rtf['resgrad'][str(n)]:.1f}x ResGrad's RTF)"
            )
        out.append(
            {
                "claim": "C2",
                "condition": condition,
                "text": text,
                "holds": bool(ratio is None or ratio >= 10),
                "figures": {"steps": reach[0] if reach else None, "rtf_ratio": ratio, "resgrad_steps": n},
            }
        )
    return out


def audio_report(config: ResGradConfig, test, tts_outputs: dict, say) -> dict:
    """Vocoded audio of the operating points: F0 error and DNSMOS on the held-out set; wav examples."""
    say(f"vocoding with {config.vocoder}")
    vocode = _vocoder(config.vocoder)
    outdir = Path(config.outdir) / "audio"
    outdir.mkdir(parents=True, exist_ok=True)
    test = test[: config.vocoded_utterances]
    systems = {"ground truth (vocoded)": [u.mel for u in test], **{k: v[: len(test)] for k, v in tts_outputs.items()}}
    report: dict = {"vocoder": config.vocoder, "systems": {}, "wavs": []}
    start = time.perf_counter()
    seconds = 0.0
    for name, mels in systems.items():
        f0_err, voicing, mos = [], [], []
        for i, (u, mel) in enumerate(zip(test, mels)):
            audio = np.asarray(vocode(mel), np.float32)
            seconds += len(audio) / SAMPLE_RATE
            f0 = features.pitch(audio)
            ia, ib = metrics.dtw_path(metrics.mel_cepstrum(u.mel), metrics.mel_cepstrum(mel))
            rmse, vde = metrics.log_f0_rmse(u.f0, f0, path=(ia, ib))
            f0_err.append(rmse)
            voicing.append(vde)
            if config.dnsmos:
                mos.append(metrics.dnsmos(audio, SAMPLE_RATE)["ovr"])
            if i < config.audio_examples:
                path = outdir / f"{u.id}-{name.split(' ')[0]}.wav"
                write_wav(path, audio)
                report["wavs"].append(str(path))
        report["systems"][name] = {
            "f0_rmse_cents": float(np.nanmean(f0_err)) if np.isfinite(f0_err).any() else None,
            "voicing_error": float(np.mean(voicing)),
            "dnsmos_ovr": float(np.mean(mos)) if mos else None,
        }
    report["vocoder_rtf"] = (time.perf_counter() - start) / max(seconds, 1e-9)
    return report


def plots(figures: dict, config: ResGradConfig, outdir: Path, test, aligned_outputs: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    conditions = list(figures["conditions"])
    fig, axes = plt.subplots(2, len(conditions), figsize=(5.5 * len(conditions), 7.5), squeeze=False, sharex="col")
    rtf = figures["rtf"]
    for column, condition in enumerate(conditions):
        rows = figures["conditions"][condition]
        for ax, metric, label in (
            (axes[0, column], "mcd", "MCD (dB)" + (", DTW" if condition == "tts" else "")),
            (axes[1, column], "gv_db", "global variance vs the recordings (dB; 0 = theirs)"),
        ):
            for method, step_list in method_steps(config).items():
                xs = [rtf[method][str(s)] for s in step_list]
                ys = [rows[f"{method}@{s}"][metric] for s in step_list]
                ax.plot(xs, ys, "o-", label=method)
                for s, x, y in zip(step_list, xs, ys):
                    ax.annotate(str(s), (x, y), fontsize=7)
            ax.scatter([rtf["fs2"]], [rows["fs2"][metric]], color="k", marker="*", s=80, label="FastSpeech 2")
            ax.set_xscale("log")
            ax.set_ylabel(label, fontsize=8)
            ax.legend(fontsize=8)
        axes[1, column].axhline(0.0, color="k", lw=0.8)
        axes[0, column].set_title(f"{condition}: quality vs RTF (labels: DDIM steps)")
        axes[1, column].set_xlabel("real-time factor (FastSpeech 2 + sampler, batch 1, this machine)")
    fig.tight_layout()
    path = outdir / "quality_vs_rtf.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(str(path))
    if test:
        u = test[0]
        panels = {"ground truth": u.mel, **{k: v[0] for k, v in aligned_outputs.items()}}
        fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.9 * len(panels)), sharex=True)
        for ax, (name, mel) in zip(np.atleast_1d(axes), panels.items()):
            ax.imshow(mel.T, origin="lower", aspect="auto", vmin=-11, vmax=2, cmap="magma")
            ax.set_ylabel(name, fontsize=8)
        fig.suptitle(f"{u.id} (aligned condition, {config.resgrad_steps} steps): {u.text[:70]}", fontsize=9)
        fig.tight_layout()
        path = outdir / "spectrograms.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(str(path))
    return paths


def write_wav(path: Path, audio: np.ndarray) -> None:
    """16-bit PCM mono (the corpus's writer), written to a temporary name first so a killed run leaves
    no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    corpus_mod.write_wav(tmp, corpus_mod.pcm16(audio))
    tmp.replace(path)


def run_sweep(config: ResGradConfig, say=print) -> dict:
    """ResGrad's gain over FastSpeech 2 against how stochastic the recordings are.

    One corpus per voice noise scale (`noise_scales`; 0 makes the voice deterministic at fixed timing),
    each with its own FastSpeech 2 and refiners (cached like `eval`'s), scored in the aligned
    condition. A deterministic regressor trained with L1 lands near the conditional median of the
    target, so the part of the residual it cannot predict grows with the noise; a sampler draws that
    part instead of averaging it away: its global variance should gain most where the noise is
    largest, while a frame-wise distance (MCD) charges a sample for the noise it draws."""
    points = []
    first: dict = {}  # the first scale's training mels by utterance id
    for scale in config.noise_scales:
        point_config = dataclasses.replace(config, noise_scale=scale)
        say(f"noise scale {scale}")
        splits, _ = load_data(point_config, say)
        mels = {u.id: u.mel for u in splits["train"]}
        first = first or mels
        # How far the voice's noise moves the recordings: the log-mel RMS difference from the first
        # scale's rendering of the same sentence (the duration noise is drawn alike, so frames align).
        diffs = [mels[k] - first[k] for k in mels if k in first and first[k].shape == mels[k].shape]
        noise_rms = float(np.sqrt(np.mean(np.concatenate(diffs) ** 2))) if diffs else float("nan")
        models = train_models(point_config, splits, say)
        steps = {m: list(config.sample_steps) for m in training.REFINERS}
        rows, _ = evaluate(models, point_config, splits["test"], "aligned", steps)
        fs2 = rows["fs2"]
        points.append(
            {
                "noise_scale": scale,
                "mel_rms_vs_first": noise_rms,
                "residual_std": float(np.mean(models.stats.residual_std)),
                "rows": rows,
                "gain": {
                    name: {
                        "mcd": fs2["mcd"] - row["mcd"],
                        "mcd_se": paired_mcd(rows, name, "fs2")[1],
                        "gv_db": abs(fs2["gv_db"]) - abs(row["gv_db"]),
                    }
                    for name, row in rows.items()
                    if name != "fs2"
                },
            }
        )
    figures = {"points": points, "config": dataclasses.asdict(config)}
    outdir = Path(config.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    figures["plots"] = [sweep_plot(points, config, outdir)]
    return figures


def sweep_plot(points: list[dict], config: ResGradConfig, outdir: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    scales = [p["noise_scale"] for p in points]
    for method in training.REFINERS:
        for i, n in enumerate(config.sample_steps):
            style = "o-" if method == "resgrad" else "s--"  # one colour per step count, one style per refiner
            for ax, metric in zip(axes, ("mcd", "gv_db")):
                ys = [p["gain"][f"{method}@{n}"][metric] for p in points]
                ax.plot(scales, ys, style, color=f"C{i % 10}", label=f"{method}@{n}")
    for ax, title in zip(axes, ("MCD gain over FastSpeech 2 (dB, > 0 better)", "GV gain: |GV| shrinks by (dB)")):
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xlabel("voice noise scale (0: deterministic at fixed timing)")
        ax.set_title(title, fontsize=9)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = outdir / "noise_sweep.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def run_synthesize(config: ResGradConfig, say=print) -> dict:
    """TEXT -> phonemes (espeak-ng, child process) -> FastSpeech 2 -> ResGrad -> vocoder -> wav."""
    from frugal.scripts.systems.resgrad.phonemize import phonemize
    from frugal.scripts.systems.resgrad.voice import PiperVoice

    if not config.text.strip():
        raise ValueError("text is empty: pass the words to speak, e.g. --text 'Hello there.'")
    out = Path(config.out)
    if out.suffix.lower() != ".wav":
        raise ValueError(f"out must name a .wav file, got {config.out!r}")
    phonemes = phonemize([config.text])[0]
    ids = PiperVoice.load().phoneme_ids(phonemes)
    splits, _ = load_data(config, say)
    models = train_models(config, splits, say)
    max_frames = training.round_up(len(ids) * 10, training.FRAME_BUCKET)
    base = training.fs2_infer(models.fs2, ids, max_frames=max_frames)
    mel = refine(models, config, "resgrad", config.resgrad_steps, [base], config.seed)[0]
    audio = np.asarray(_vocoder(config.vocoder)(mel), np.float32)
    write_wav(out, audio)
    return {"out": str(out), "seconds": len(audio) / SAMPLE_RATE, "steps": config.resgrad_steps, "phonemes": phonemes}

"""`frugal tts corpus | train | eval | sweep | synthesize` and the ResGrad section of the tour."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from frugal.scripts.cli import config_command
from frugal.scripts.systems.resgrad.config import PRESETS, ResGradConfig

TOUR_ORDER = 90


def _say(config: ResGradConfig):
    if not config.progress:
        return lambda msg: None
    from rich.console import Console

    console = Console()
    return lambda msg: console.print(f"[dim]{msg}[/dim]")


def _corpus_rows(corpus: dict) -> list[list]:
    return [
        [split, c["utterances"], f"{c['hours'] * 60:.1f}", f"{c['mean_seconds']:.2f}"]
        for split, c in corpus.items()
        if isinstance(c, dict)
    ]


def run_corpus_command(config: ResGradConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.resgrad.experiment import run_corpus

    figures = run_corpus(config, _say(config))
    print_table(
        f"corpus ({figures['corpus']['source']})",
        ["split", "utterances", "minutes", "mean s"],
        _corpus_rows(figures["corpus"]),
    )
    return figures


def run_train_command(config: ResGradConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.resgrad.experiment import run_train

    figures = run_train(config, _say(config))
    print_table(
        "final training losses",
        ["model", "steps", "loss"],
        [[name, curve[-1][0], f"{curve[-1][1]:.4f}"] for name, curve in figures["loss_curves"].items() if curve],
    )
    return figures


def markdown(figures: dict) -> str:
    from frugal.scripts.report import machine_text

    lines = ["# ResGrad: residual diffusion on a frozen FastSpeech 2", ""]
    corpus = figures["corpus"]
    lines.append(
        "Corpus: "
        + ", ".join(
            f"{k} {v['utterances']} utterances ({v['hours'] * 60:.1f} min)"
            for k, v in corpus.items()
            if isinstance(v, dict)
        )
        + f" ({corpus['source']})."
    )
    lines += ["", "| condition | system | MCD (dB) | log-mel L1 | GV (dB) | RTF |", "|---|---|---|---|---|---|"]
    rtf = figures["rtf"]
    for condition, rows in figures["conditions"].items():
        for name, row in rows.items():
            method, _, steps = name.partition("@")
            r = rtf["fs2"] if name == "fs2" else rtf[method][steps]
            l1 = "" if row["mel_l1"] != row["mel_l1"] else f"{row['mel_l1']:.3f}"
            mcd = f"{row['mcd']:.3f} ± {row['mcd_se']:.3f}"
            lines.append(f"| {condition} | {name} | {mcd} | {l1} | {row['gv_db']:+.2f} | {r:.4f} |")
    lines += ["", "| claim | condition | result | holds |", "|---|---|---|---|"]
    for c in figures["claims"]:
        lines.append(f"| {c['claim']} | {c['condition']} | {c['text']} | {'yes' if c['holds'] else 'no'} |")
    audio = figures.get("audio")
    if audio:
        lines += [
            "",
            f"Vocoded ({audio['vocoder']}, RTF {audio['vocoder_rtf']:.3f}), {audio['condition']} condition:",
            "",
        ]
        lines += ["| system | log-F0 RMSE (cents) | voicing error | DNSMOS OVR |", "|---|---|---|---|"]
        for name, row in audio["systems"].items():
            mos = "" if row["dnsmos_ovr"] is None else f"{row['dnsmos_ovr']:.2f}"
            f0 = "" if row["f0_rmse_cents"] is None else f"{row['f0_rmse_cents']:.0f}"
            lines.append(f"| {name} | {f0} | {row['voicing_error']:.3f} | {mos} |")
    if "machine" in figures:
        lines += ["", "Machine: " + machine_text(figures["machine"]) + "."]
    return "\n".join(lines) + "\n"


def run_eval_command(config: ResGradConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.resgrad.experiment import run_eval

    figures = run_eval(config, _say(config))
    rtf = figures["rtf"]
    for condition, rows in figures["conditions"].items():
        print_table(
            f"held-out utterances, {condition} condition",
            ["system", "MCD (dB)", "GV (dB)", "RTF"],
            [
                [
                    name,
                    f"{row['mcd']:.3f} ± {row['mcd_se']:.3f}",
                    f"{row['gv_db']:+.2f}",
                    f"{rtf['fs2'] if name == 'fs2' else rtf[name.split('@')[0]][name.split('@')[1]]:.4f}",
                ]
                for name, row in rows.items()
            ],
        )
    print_table(
        "ResGrad's claims",
        ["claim", "condition", "this run", "holds"],
        [[c["claim"], c["condition"], c["text"], "yes" if c["holds"] else "no"] for c in figures["claims"]],
    )
    out = Path(config.outdir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "resgrad_eval.md").write_text(markdown(figures))
    print(f"report: {out / 'resgrad_eval.md'}; plots: {', '.join(figures['plots'])}")
    return figures


def sweep_markdown(figures: dict) -> str:
    lines = [
        "# ResGrad: gain over FastSpeech 2 against the voice's noise scale (aligned condition)",
        "",
        "| noise scale | log-mel RMS vs first scale | residual std | system | MCD (dB) | MCD gain | GV (dB) "
        "| GV gain |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in figures["points"]:
        for name, row in p["rows"].items():
            gain = p["gain"].get(name)
            mcd_gain = "" if gain is None else f"{gain['mcd']:+.2f} ± {gain['mcd_se']:.2f}"
            gv_gain = "" if gain is None else f"{gain['gv_db']:+.2f}"
            lines.append(
                f"| {p['noise_scale']:g} | {p['mel_rms_vs_first']:.3f} | {p['residual_std']:.3f} | {name} "
                f"| {row['mcd']:.2f} ± {row['mcd_se']:.2f} "
                f"| {mcd_gain} | {row['gv_db']:+.2f} | {gv_gain} |"
            )
    lines += [
        "",
        "Gains are FastSpeech 2's value minus the system's (MCD) and how much |GV| shrinks (GV): > 0 is better. "
        "Log-mel RMS vs first scale: how far the voice's noise moves the training recordings from the first "
        "scale's rendering of the same sentences (natural-log units); residual std: FastSpeech 2's per-bin "
        "residual deviation on the training set, averaged over bins.",
    ]
    return "\n".join(lines) + "\n"


def run_sweep_command(config: ResGradConfig) -> dict:
    from frugal.scripts.report import print_table
    from frugal.scripts.systems.resgrad.experiment import run_sweep

    figures = run_sweep(config, _say(config))
    print_table(
        "ResGrad's gain over FastSpeech 2 by voice noise scale (aligned; > 0 better)",
        ["noise scale", "system", "MCD", "MCD gain", "GV (dB)", "GV gain"],
        [
            [
                f"{p['noise_scale']:g}",
                name,
                f"{row['mcd']:.2f}",
                f"{p['gain'][name]['mcd']:+.2f}" if name in p["gain"] else "",
                f"{row['gv_db']:+.2f}",
                f"{p['gain'][name]['gv_db']:+.2f}" if name in p["gain"] else "",
            ]
            for p in figures["points"]
            for name, row in p["rows"].items()
        ],
    )
    out = Path(config.outdir)
    (out / "resgrad_sweep.md").write_text(sweep_markdown(figures))
    print(f"report: {out / 'resgrad_sweep.md'}; plot: {figures['plots'][0]}")
    return figures


def run_synthesize_command(config: ResGradConfig) -> dict:
    from frugal.scripts.systems.resgrad.experiment import run_synthesize

    figures = run_synthesize(config, _say(config))
    print(f"wrote {figures['out']} ({figures['seconds']:.2f} s of audio, {figures['steps']} ResGrad steps)")
    return figures


def tour_section(quick: bool, outdir: Path):
    """FastSpeech 2 and the refiners trained briefly on a few built-in utterances; the quality-RTF curve."""
    from frugal.scripts.systems.resgrad.experiment import run_eval
    from frugal.scripts.tour import TourSection

    config = dataclasses.replace(PRESETS["tour" if quick else "full"], outdir=str(outdir / "resgrad"), progress=False)
    figures = run_eval(config, lambda msg: None)
    n = config.resgrad_steps
    aligned = figures["conditions"]["aligned"]
    summary = [
        (
            "corpus (Piper joe voice, LJSpeech sentences)",
            f"{figures['corpus']['train']['utterances']} train / {figures['corpus']['test']['utterances']} held out",
        ),
        (
            f"aligned MCD: FastSpeech 2 / ResGrad@{n} / full-mel@{n} / shallow@{n}",
            " / ".join(f"{aligned[k]['mcd']:.2f}" for k in ("fs2", f"resgrad@{n}", f"full@{n}", f"shallow@{n}")),
        ),
        (
            "aligned GV vs the recordings (dB, 0 is theirs), same order",
            " / ".join(f"{aligned[k]['gv_db']:+.2f}" for k in ("fs2", f"resgrad@{n}", f"full@{n}", f"shallow@{n}")),
        ),
    ]
    summary += [
        (f"{c['claim']} ({c['condition']})", ("holds: " if c["holds"] else "not met: ") + c["text"])
        for c in figures["claims"]
    ]
    if quick:
        summary.append(
            (
                "why the tour cannot show the claims",
                f"{config.train_sentences} sentences and {config.fs2_steps}/{config.denoiser_steps} steps only run the "
                "pipeline; `frugal tts eval` (500 sentences, about 40 minutes of speech) is the comparison, table in "
                "scripts/systems/resgrad/README.md",
            )
        )
    return TourSection(
        title="ResGrad: residual diffusion refining a frozen FastSpeech 2 (Piper joe voice, HiFi-GAN)",
        figures=figures,
        markdown=markdown(figures).split("\n", 1)[1],
        summary=summary,
        plots=[str(Path(p).relative_to(outdir)) for p in figures["plots"]],
    )


SYNTH_ONLY = ("text", "out", "noise_scales")
SWEEP_UNUSED = (
    "text",
    "out",
    "noise_scale",
    "conditions",
    "shallow_k",
    "rtf_utterances",
    "vocoder",
    "vocoded_utterances",
    "dnsmos",
    "audio_examples",
)
COMMANDS = [
    config_command(
        ("tts", "corpus"),
        "build (or load) the speech corpus and describe it",
        ResGradConfig,
        PRESETS,
        run_corpus_command,
        unused_fields=SYNTH_ONLY,
    ),
    config_command(
        ("tts", "train"),
        "train FastSpeech 2, then the ResGrad and full-mel refiners on its output (cached; resumes)",
        ResGradConfig,
        PRESETS,
        run_train_command,
        unused_fields=SYNTH_ONLY,
    ),
    config_command(
        ("tts", "eval"),
        "compare FastSpeech 2, ResGrad, full-mel and shallow diffusion on held-out utterances (MCD, GV, RTF, audio)",
        ResGradConfig,
        PRESETS,
        run_eval_command,
        unused_fields=SYNTH_ONLY,
    ),
    config_command(
        ("tts", "sweep"),
        "ResGrad's gain over FastSpeech 2 against the voice's noise scale (one corpus and model set per scale)",
        ResGradConfig,
        PRESETS,
        run_sweep_command,
        unused_fields=SWEEP_UNUSED,
    ),
    config_command(
        ("tts", "synthesize"),
        "speak TEXT with FastSpeech 2 + ResGrad + the vocoder into a wav file",
        ResGradConfig,
        PRESETS,
        run_synthesize_command,
        unused_fields=("noise_scales",),
    ),
]

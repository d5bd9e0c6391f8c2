"""The LEAD experiment: a retrieval set, the MiniLM teacher, students distilled by each method over
several seeds, all evaluated by exact search on held-out queries beside BM25 and the teacher.

`run_data` builds (or loads) the set and mines hard negatives, `run_eval` scores the reference
retrievers (BM25; the teacher's every layer, frozen and with heads), `run_distill` trains and scores the
students and checks the ordering the paper reports, LEAD > response KD > no KD (arXiv 2212.05225),
with seed-paired differences.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from frugal.scripts.systems.lead.config import LeadConfig
from frugal.scripts.systems.lead.retrieval_set import RetrievalSet
from frugal.scripts.systems.lead.teacher import digest

REPORT_METRICS = ("mrr@10", "ndcg@10", "recall@50", "recall@100")
TEACHER_LAYERS = 6
_quiet = lambda msg: None


def load_set(config: LeadConfig, progress=_quiet) -> RetrievalSet:
    """The configured retrieval set, cached in `cache_dir` when it is built from installed sources."""
    cache = Path(config.cache_dir)
    if config.dataset == "docstrings":
        from frugal.scripts.systems.lead.corpus import docstring_set, package_versions

        how = (config.split, config.held_out) if config.split == "package" else (config.split, config.test_fraction)
        path = cache / f"docstrings_{digest(config.packages, how, package_versions(config.packages))}.json"
        if path.exists():
            rs = RetrievalSet.load(path)
        else:
            progress(f"building the documentation set from {', '.join(config.packages)}")
            rs = docstring_set(
                config.packages, held_out=config.held_out, split=config.split, test_fraction=config.test_fraction
            )
            rs.save(path)
    elif config.dataset == "reverse_dictionary":
        from frugal.scripts.systems.lead.reverse_dictionary import reverse_dictionary_set

        progress("building the reverse-dictionary set (WordNet glosses -> Webster 1913)")
        rs = reverse_dictionary_set(config.dictionary_root)
    else:
        from frugal.scripts.systems.lead.user_data import load_beir_folder, load_user_set

        if config.beir_folder:
            rs = load_beir_folder(config.beir_folder)
        else:
            rs = load_user_set(config.corpus, config.queries, config.test_qrels, config.train_qrels)
    return rs.subset(max_train=config.max_train_queries, max_test=config.max_test_queries).validate()


def merge_rankings(rankings: list[np.ndarray], positives: np.ndarray, depth: int) -> np.ndarray:
    """(queries, depth) candidates taken in turn from each ranking (best first), without repeats and
    without the query's positive; short lists are filled from the next ranks."""
    out = np.zeros((len(positives), depth), np.int64)
    for i, positive in enumerate(positives):
        seen, merged = {int(positive)}, []
        for rank in range(max(len(r[i]) for r in rankings)):
            for r in rankings:
                if rank < len(r[i]) and int(r[i][rank]) not in seen:
                    seen.add(int(r[i][rank]))
                    merged.append(int(r[i][rank]))
            if len(merged) >= depth:
                break
        if len(merged) < depth:
            raise ValueError(
                f"only {len(merged)} negatives for query {i}; the corpus is smaller than negative_depth={depth}"
            )
        out[i] = merged[:depth]
    return out


@dataclasses.dataclass
class Prepared:
    rs: RetrievalSet
    negatives: np.ndarray
    frozen: dict  # {"train_q", "test_q", "passages"} -> (6, N, 384)
    teacher: dict  # the teacher the students learn from (frozen or with heads)
    bm25_test: np.ndarray  # (test queries, 100)
    seconds: dict


def _teacher_texts(config, rs, progress):
    from frugal.scripts.systems.lead.teacher import teacher_embeddings

    kw = dict(cache_dir=config.cache_dir, progress=progress)
    return {
        "train_q": teacher_embeddings(rs.train_queries, max_length=config.query_max_length, **kw)
        if rs.train_queries
        else None,
        "test_q": teacher_embeddings(rs.test_queries, max_length=config.query_max_length, **kw),
        "passages": teacher_embeddings(rs.passages, max_length=config.teacher_max_length, **kw),
    }


def prepare(config: LeadConfig, progress=_quiet, *, need_training: bool = True, fit_teacher: bool = True) -> Prepared:
    from frugal.scripts.systems.lead.bm25 import BM25
    from frugal.scripts.systems.lead.metrics import search
    from frugal.scripts.systems.lead.teacher import apply_heads, fit_heads

    seconds = {}
    t = time.perf_counter()
    rs = load_set(config, progress)
    if need_training and not rs.train_queries:
        raise ValueError(f"retrieval set {rs.name!r} has no training queries; distillation needs train qrels")
    seconds["set"] = time.perf_counter() - t
    t = time.perf_counter()
    bm25 = BM25(list(rs.passages))
    bm25_test = bm25.top(list(rs.test_queries), 100)
    seconds["bm25"] = time.perf_counter() - t
    t = time.perf_counter()
    frozen = _teacher_texts(config, rs, progress)
    seconds["teacher_encode"] = time.perf_counter() - t
    negatives = None
    teacher = frozen
    if rs.train_queries:
        positives = np.asarray(rs.train_positives)
        depth = config.negative_depth
        # Negatives never include a held-out query's relevant passage: otherwise training teaches the
        # student that those passages are never the answer (with a split by package, that every
        # passage of the held-out package is wrong), a shortcut that ranks them last at test time.
        pool = np.ones(len(rs.passages), bool)
        pool[[p for relevant in rs.test_relevant for p in relevant]] = False
        pool[positives] = True
        pool_index = np.flatnonzero(pool)
        bm25_train = bm25.top(list(rs.train_queries), depth + 1, allowed=pool)
        teacher_train = pool_index[search(frozen["train_q"][-1], frozen["passages"][-1][pool_index], depth=depth + 1)]
        negatives = merge_rankings([bm25_train, teacher_train], positives, depth)
        if config.teacher == "heads" and fit_teacher:
            t = time.perf_counter()
            progress(f"teacher: fitting one linear head per layer ({config.head_steps} steps)")
            heads = fit_heads(
                frozen["train_q"], frozen["passages"], positives, negatives, steps=config.head_steps, scale=config.scale
            )
            teacher = {k: apply_heads(heads, v) for k, v in frozen.items()}
            seconds["teacher_heads"] = time.perf_counter() - t
    return Prepared(rs, negatives, frozen, teacher, bm25_test, seconds)


def evaluate_embeddings(queries: np.ndarray, passages: np.ndarray, relevant) -> dict:
    from frugal.scripts.systems.lead.metrics import ranking_metrics, search

    return ranking_metrics(search(queries, passages, depth=100), relevant)


def reference_rows(prep: Prepared, config: LeadConfig) -> dict:
    """BM25 and the teacher's every layer (frozen, and with heads when fitted) on the held-out queries."""
    from frugal.scripts.systems.lead.metrics import ranking_metrics

    relevant = prep.rs.test_relevant
    rows = {"bm25": ranking_metrics(prep.bm25_test, relevant)}
    teachers = {"frozen": prep.frozen}
    if prep.teacher is not prep.frozen:
        teachers["heads"] = prep.teacher
    layers = {}
    for name, emb in teachers.items():
        layers[name] = [
            evaluate_embeddings(emb["test_q"][layer], emb["passages"][layer], relevant)
            for layer in range(TEACHER_LAYERS)
        ]
        rows[f"teacher ({name})"] = layers[name][-1]
    return {"rows": rows, "teacher_layers": layers}


def run_data(config: LeadConfig, progress=_quiet) -> dict:
    prep = prepare(config, progress, need_training=False, fit_teacher=False)
    rs = prep.rs
    figures = {"set": rs.describe(), "seconds": prep.seconds}
    if rs.train_queries:
        i = 0
        figures["example"] = {
            "query": rs.train_queries[i],
            "positive": rs.passages[rs.train_positives[i]][:300],
            "hard_negative": rs.passages[prep.negatives[i][0]][:300],
        }
    _write(config, "lead_data", figures)
    return figures


def run_eval(config: LeadConfig, progress=_quiet) -> dict:
    prep = prepare(config, progress, need_training=False)
    figures = {"set": prep.rs.describe(), **reference_rows(prep, config), "seconds": prep.seconds}
    _write(config, "lead_eval", figures)
    return figures


def student_tokenizer(config: LeadConfig, rs: RetrievalSet):
    """The student's tokenizer: its own BPE (trained on the training text, cached) or MiniLM's."""
    if config.student == "minilm3":
        from frugal.models.bert import load_tokenizer, minilm_dir

        return load_tokenizer(minilm_dir())
    return _bpe(config, rs)


def student_model(config: LeadConfig, vocab_size: int, seed: int):
    """A fresh student: random init from `seed` (bpe), or MiniLM's layers 0, 2, 4 (minilm3)."""
    from flax import nnx

    from frugal.models.bert import BertConfig, BertEncoder, keep_layers, load_minilm

    if config.student == "minilm3":
        return keep_layers(load_minilm()[0], (0, 2, 4))
    cfg = BertConfig(
        vocab_size=vocab_size,
        hidden_size=config.width,
        num_hidden_layers=config.layers,
        num_attention_heads=4,
        intermediate_size=4 * config.width,
        max_position_embeddings=max(config.query_max_length, config.passage_max_length),
    )
    return BertEncoder(cfg, rngs=nnx.Rngs(seed))


def _bpe(config: LeadConfig, rs: RetrievalSet):
    from tokenizers import Tokenizer

    from frugal.scripts.systems.lead.encoders import train_bpe

    texts = rs.train_queries + rs.passages  # never the held-out queries
    path = Path(config.cache_dir) / f"bpe_{digest(config.vocab_size, texts)}.json"
    if path.exists():
        return Tokenizer.from_file(str(path))
    tokenizer = train_bpe(texts, config.vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(path) + ".tmp")
    Path(str(path) + ".tmp").replace(path)
    return tokenizer


def _summary(results: dict) -> dict:
    out = {}
    for method, runs in results.items():
        out[method] = {
            m: {
                "mean": float(np.mean([r[m] for r in runs])),
                "sd": float(np.std([r[m] for r in runs], ddof=1)) if len(runs) > 1 else 0.0,
                "seeds": [r[m] for r in runs],
            }
            for m in REPORT_METRICS
        }
    return out


def paired_check(results: dict, better: str, worse: str, metric: str = "mrr@10") -> dict | None:
    """Seed-paired difference better - worse (same seed: same init and batches); holds when its mean
    exceeds twice its standard error, reversed when below minus twice."""
    if better not in results or worse not in results:
        return None
    diffs = np.array([b[metric] - w[metric] for b, w in zip(results[better], results[worse])])
    mean = float(diffs.mean())
    se = float(diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else float("nan")
    if not np.isfinite(se):
        verdict = "one seed: no verdict"
    elif mean > 2 * se:
        verdict = "holds"
    elif mean < -2 * se:
        verdict = "reversed"
    else:
        verdict = "not shown (within 2 SE)"
    return {
        "claim": f"{better} > {worse} on {metric}",
        "diffs": diffs.tolist(),
        "mean": mean,
        "se": se,
        "verdict": verdict,
        "ours": f"{mean:+.4f} ± {se:.4f} (SE over {len(diffs)} seeds)",
    }


def run_distill(config: LeadConfig, progress=_quiet) -> dict:
    from frugal.scripts.report import machine_description, machine_record
    from frugal.scripts.systems.lead.encoders import encode, fixed_tokens
    from frugal.scripts.systems.lead.training import DistillData, LossSettings, distill

    load_before = machine_description()
    prep = prepare(config, progress)
    rs = prep.rs
    tokenizer = student_tokenizer(config, rs)
    q_ids, q_mask = fixed_tokens(tokenizer, rs.train_queries, config.query_max_length)
    p_ids, p_mask = fixed_tokens(tokenizer, rs.passages, config.passage_max_length)
    t_ids, t_mask = fixed_tokens(tokenizer, rs.test_queries, config.query_max_length)
    data = DistillData(
        q_ids,
        q_mask,
        p_ids,
        p_mask,
        np.asarray(rs.train_positives),
        prep.negatives,
        prep.teacher["train_q"],
        prep.teacher["passages"],
    )
    student_depth = 3 if config.student == "minilm3" else config.layers
    steps_cache: dict = {}
    results: dict[str, list] = {}
    runs = []
    # A student's checkpoint folder is named by everything that shapes it but the method and seed
    # (those are in the name), so a changed setting never resumes from a stale run.
    shaping = {
        k: v for k, v in dataclasses.asdict(config).items() if k not in ("methods", "seeds", "outdir", "progress")
    }
    run_key = digest(sorted(shaping.items()))
    # Seeds outermost: every method has a finished run of seed 0 before any method starts seed 1.
    for seed in config.seeds:
        for method in config.methods:
            settings = LossSettings(
                method,
                student_depth,
                TEACHER_LAYERS,
                scale=config.scale,
                temperature=config.temperature,
                layer_temperature=config.layer_temperature,
                num_pairs=config.num_pairs,
                resample_every=config.resample_every,
                seed=seed,
            )
            student = student_model(config, tokenizer.get_vocab_size(), seed)
            workdir = Path(config.outdir) / "students" / f"{method}_seed{seed}_{run_key}" if config.outdir else None
            progress(f"student {config.student}, {method}, seed {seed}: {config.steps} steps")
            t = time.perf_counter()
            model, history = distill(
                student,
                data,
                settings,
                steps=config.steps,
                batch_queries=config.batch_queries,
                hard_negatives=config.hard_negatives,
                lr=config.learning_rate,
                workdir=workdir,
                progress=config.progress,
                step_cache=steps_cache,
            )
            train_s = time.perf_counter() - t
            t = time.perf_counter()
            passages = encode(model, p_ids, p_mask, last_only=True)[0]
            queries = encode(model, t_ids, t_mask, last_only=True)[0]
            metrics = evaluate_embeddings(queries, passages, rs.test_relevant)
            record = {
                "method": method,
                "seed": seed,
                **metrics,
                "train_seconds": train_s,
                "eval_seconds": time.perf_counter() - t,
                "history": history,
            }
            runs.append(record)
            results.setdefault(method, []).append(metrics)
            progress(f"  MRR@10 {metrics['mrr@10']:.4f}  nDCG@10 {metrics['ndcg@10']:.4f}  ({train_s:.0f} s)")
    references = reference_rows(prep, config)
    checks = [c for c in (paired_check(results, "lead", "response"), paired_check(results, "response", "none")) if c]
    figures = {
        "config": _jsonable(config),
        "set": rs.describe(),
        "student": config.student,
        "references": references,
        "runs": runs,
        "summary": _summary(results),
        "checks": checks,
        "seconds": prep.seconds,
        "machine": machine_record(load_before),
    }
    _write(config, "lead_distill", figures, markdown=distill_markdown(figures))
    return figures


def _jsonable(config) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def distill_markdown(figures: dict) -> str:
    from frugal.scripts.systems.lead.training import METHODS

    s = figures["set"]
    lines = [
        "## LEAD distillation",
        "",
        f"Set `{s['name']}`: {s['passages']} passages, {s['train_queries']} training queries, "
        f"{s['test_queries']} held-out queries; student `{figures['student']}`.",
        "",
        "| retriever | " + " | ".join(REPORT_METRICS) + " |",
        "|---|" + "---|" * len(REPORT_METRICS),
    ]
    for name, row in figures["references"]["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4f}" for m in REPORT_METRICS) + " |")
    for method, row in figures["summary"].items():
        n = len(row["mrr@10"]["seeds"])
        lines.append(
            f"| student, {method} ({METHODS[method]}; {n} seeds) | "
            + " | ".join(f"{row[m]['mean']:.4f} ± {row[m]['sd']:.4f}" for m in REPORT_METRICS)
            + " |"
        )
    lines += ["", "| claim | seed-paired difference | verdict |", "|---|---|---|"]
    lines += [f"| {c['claim']} | {c['ours']} | {c['verdict']} |" for c in figures["checks"]]
    layers = figures["references"]["teacher_layers"]
    lines += [
        "",
        "Teacher MRR@10 by layer (1 = first):",
        "",
        "| teacher | " + " | ".join(str(i + 1) for i in range(TEACHER_LAYERS)) + " |",
        "|---|" + "---|" * TEACHER_LAYERS,
    ]
    for name, per_layer in layers.items():
        lines.append(f"| {name} | " + " | ".join(f"{m['mrr@10']:.3f}" for m in per_layer) + " |")
    if "machine" in figures:
        from frugal.scripts.report import machine_text

        seconds = sum(r["train_seconds"] + r["eval_seconds"] for r in figures["runs"])
        lines += ["", f"Machine: {machine_text(figures['machine'])}; students {seconds / 60:.0f} min in all."]
    return "\n".join(lines) + "\n"


def _write(config: LeadConfig, stem: str, figures: dict, markdown: str | None = None) -> None:
    if not config.outdir:
        return
    from frugal.scripts.report import write_json

    out = Path(config.outdir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{stem}.json", figures)
    if markdown:
        (out / f"{stem}.md").write_text(markdown)

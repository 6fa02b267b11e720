"""One function per figure. Each writes a PNG and returns its caption, or returns None with no file
when the run has nothing to show for it (e.g. no score histograms in a plain FedAvg run)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from feddqc_flwr.report.run_data import RunData  # noqa: E402

CLEAN_COLOUR = "tab:green"
TYPE_COLOURS = {"swap": "tab:red", "delete": "tab:orange", "cut": "tab:purple", "substitute": "tab:brown",
                "noisy": "tab:pink"}


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def metrics_per_round(run: RunData, path: Path) -> str | None:
    """Server evaluation metrics, mean client training loss and learning rate by round."""
    evals: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for record in run.rounds:
        for key, value in (record.get("server_eval") or {}).items():
            if key != "seconds" and value is not None:
                evals[key].append((record["server_round"], value))
    trained = run.trained_rounds
    train_loss = [(r["server_round"], r["train"].get("train-loss")) for r in trained if r.get("train")]
    if not evals and not train_loss:
        return None
    losses = {k: v for k, v in evals.items() if "loss" in k}
    others = {k: v for k, v in evals.items() if "loss" not in k}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, points in losses.items():
        axes[0].plot(*zip(*points, strict=True), marker="o", label=key)
    if train_loss:
        axes[0].plot(*zip(*train_loss, strict=True), marker="s", linestyle="--", label="train-loss (clients)")
    axes[0].set(title="losses", xlabel="round")
    axes[0].legend(fontsize=8)
    for key, points in others.items():
        axes[1].plot(*zip(*points, strict=True), marker="o", label=key)
    axes[1].set(title="other evaluation metrics", xlabel="round")
    if others:
        axes[1].legend(fontsize=8)
    else:
        axes[1].text(0.5, 0.5, "none recorded (see eval-metrics)", ha="center", transform=axes[1].transAxes)
    axes[2].plot([r["server_round"] for r in trained], [r["lr"] for r in trained], marker="o")
    for r in trained:
        if r.get("rescore"):
            axes[2].axvline(r["server_round"], color="grey", linestyle=":")
    axes[2].set(title="learning rate (dotted: hierarchy starts)", xlabel="round")
    _save(fig, path)
    return "Evaluation metrics, client training loss and learning rate per round."


def score_histograms(run: RunData, path: Path) -> str | None:
    """Global histogram of keep-scores, clean vs corrupted, at each hierarchy start, with lambda."""
    stages = [r for r in run.trained_rounds if r.get("histogram")]
    if not stages:
        return None
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.8), squeeze=False)
    for ax, record in zip(axes[0], stages, strict=True):
        hist = record["histogram"]
        edges, counts, bad = np.asarray(hist["edges"]), np.asarray(hist["counts"]), np.asarray(hist["bad"])
        widths = np.diff(edges)
        ax.bar(edges[:-1], counts - bad, width=widths, align="edge", color=CLEAN_COLOUR, alpha=0.6, label="clean")
        ax.bar(edges[:-1], bad, width=widths, align="edge", color="tab:red", alpha=0.6, label="corrupted")
        if record.get("threshold") is not None:
            ax.axvline(record["threshold"], color="black", linestyle="--", label="lambda")
        auroc = (record.get("scoring") or {}).get("auroc")
        title = f"hierarchy {record['hierarchy']}" + (f" (AUROC {auroc:.2f})" if auroc is not None else "")
        ax.set(title=title, xlabel=f"{run.run_config.get('scorer', 'score')} keep-score", ylabel="samples")
        ax.legend(fontsize=8)
    _save(fig, path)
    return ("Scores of every client's pool at each hierarchy start (summed client histograms), clean vs "
            "synthetically corrupted, with the global threshold.")


def data_map(run: RunData, path: Path) -> str | None:
    """Confidence vs variability of each training sample's response probability across rounds."""
    if not run.data_map:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 5))
    by_type: dict[str, list[dict]] = defaultdict(list)
    for point in run.data_map:
        by_type[point["bad_type"] if point["is_bad"] else "clean"].append(point)
    for kind, points in sorted(by_type.items()):
        ax.scatter([p["variability"] for p in points], [p["confidence"] for p in points], s=14, alpha=0.7,
                   color=CLEAN_COLOUR if kind == "clean" else TYPE_COLOURS.get(kind, "tab:gray"), label=kind)
    ax.set(xlabel="variability (std of response probability over rounds)",
           ylabel="confidence (mean response probability)", title="data map")
    ax.legend(fontsize=8)
    _save(fig, path)
    rounds = max(p["rounds"] for p in run.data_map)
    return (f"Data map of {len(run.data_map)} training samples over {rounds} rounds, coloured by quality flag "
            "(from the clients' node-local files).")


def update_similarity(run: RunData, path: Path) -> str | None:
    """Mean cosine similarity of client adapter updates, clients ordered by node id."""
    pairs: dict[tuple[float, float], list[float]] = defaultdict(list)
    per_round = []
    for record in run.trained_rounds:
        matrix, clients = record.get("update_similarity") or [], record.get("clients") or []
        if not matrix or len(matrix) != len(clients):
            continue
        nodes = [c["node"] for c in clients]
        for i, a in enumerate(nodes):
            for j, b in enumerate(nodes):
                pairs[(a, b)].append(matrix[i][j])
        off = [matrix[i][j] for i in range(len(nodes)) for j in range(len(nodes)) if i != j]
        if off:
            per_round.append((record["server_round"], float(np.mean(off))))
    if not pairs:
        return None
    nodes = sorted({a for a, _ in pairs})
    grid = np.full((len(nodes), len(nodes)), np.nan)
    for (a, b), values in pairs.items():
        grid[nodes.index(a), nodes.index(b)] = np.mean(values)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    image = axes[0].imshow(grid, vmin=-1, vmax=1, cmap="coolwarm")
    labels = [f"client {i + 1}" for i in range(len(nodes))]
    axes[0].set_xticks(range(len(nodes)), labels, rotation=45)
    axes[0].set_yticks(range(len(nodes)), labels)
    for i in range(len(nodes)):
        for j in range(len(nodes)):
            if np.isfinite(grid[i, j]):
                axes[0].text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(image, ax=axes[0])
    axes[0].set_title("mean cosine similarity of adapter updates")
    if per_round:
        axes[1].plot(*zip(*per_round, strict=True), marker="o")
    axes[1].set(title="mean off-diagonal similarity per round", xlabel="round", ylim=(-1, 1))
    _save(fig, path)
    return "Cosine similarity of the clients' adapter updates (client weights minus the global weights sent)."


def scoring_vs_training_time(run: RunData, path: Path) -> str | None:
    """Client seconds spent scoring vs training, per hierarchy (summed over clients)."""
    scoring: dict[int, float] = defaultdict(float)
    training: dict[int, float] = defaultdict(float)
    for record in run.trained_rounds:
        stage = record["hierarchy"]
        scoring[stage] += (record.get("scoring") or {}).get("client-score-seconds", 0.0) or 0.0
        for client in record.get("clients") or []:
            training[stage] += client.get("train-seconds", 0.0) or 0.0
            scoring[stage] += client.get("score-seconds", 0.0) or 0.0
    if not training:
        return None
    stages = sorted(training)
    x = np.arange(len(stages))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.bar(x - 0.2, [scoring[s] for s in stages], width=0.4, label="scoring")
    ax.bar(x + 0.2, [training[s] for s in stages], width=0.4, label="training")
    ax.set_xticks(x, [f"hierarchy {s}" for s in stages])
    ax.set(ylabel="client seconds (sum over clients)", title="scoring vs training time")
    ax.legend()
    _save(fig, path)
    total_s, total_t = sum(scoring.values()), sum(training.values())
    return f"Scoring took {total_s:.1f} s and training {total_t:.1f} s of client time ({total_s / total_t:.1%})."


RUN_PLOTS = {
    "metrics-per-round": metrics_per_round,
    "score-histograms": score_histograms,
    "data-map": data_map,
    "update-similarity": update_similarity,
    "scoring-vs-training-time": scoring_vs_training_time,
}

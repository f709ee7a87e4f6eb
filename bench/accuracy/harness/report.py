"""Results files: the JSON record, a markdown table, and the accuracy-vs-budget plot."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import torch


def environment() -> dict:
    """What produced the numbers: hardware, versions, commit ("+dirty" when tracked files
    differ from it: the device machine's copy can carry a newer tree than its HEAD)."""
    import transformers

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True,
                              check=False).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD") or None
        if commit and git("status", "--porcelain", "--untracked-files=no"):
            commit += "+dirty"
    except OSError:
        commit = None
    return {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "git_commit": commit,
    }


def write_json(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    return path


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    """A GitHub table of `columns`; floats rounded for reading."""
    def cell(v):
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def accuracy_plot(rows: list[dict], path: Path, title: str) -> Path:
    """Accuracy (Wilson 95 % bars) vs budget fraction, one line per policy; dense as a band."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise RuntimeError("the plot needs matplotlib: pip install 'raas_flex[bench]' "
                           "(or pass --no-plot).") from err
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for policy in dict.fromkeys(r["policy"] for r in rows):
        pts = sorted((r for r in rows if r["policy"] == policy), key=lambda r: r["budget_fraction"])
        if all(r["budget_fraction"] >= 1.0 for r in pts):  # keep-all references
            r = pts[0]
            ax.axhspan(r["ci_low"], r["ci_high"], alpha=0.12, color="grey")
            ax.axhline(r["accuracy"], ls="--", color="grey", label=f"{policy} (full cache)")
            continue
        x = [r["budget_fraction"] for r in pts]
        y = [r["accuracy"] for r in pts]
        err = [[r["accuracy"] - r["ci_low"] for r in pts], [r["ci_high"] - r["accuracy"] for r in pts]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=policy)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("budget L / decode length")
    ax.set_ylabel("exact-answer accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

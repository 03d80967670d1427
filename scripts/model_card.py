#!/usr/bin/env python3
"""Write a model's MODEL_CARD.md from its manifest, a `tremble eval` report and a static preamble.

    python3 scripts/model_card.py MODEL_DIR REPORT_DIR PREAMBLE.md SOURCES.md

The numbers come from report.json as `tremble eval` wrote it, so the card can be checked by
re-running the command it quotes.
"""
import json
import os
import sys


def pct(x):
    return f"{100 * x:.1f}%"


def main(model_dir, report_dir, preamble, sources):
    m = json.load(open(os.path.join(model_dir, "tremble.json")))
    r = json.load(open(os.path.join(report_dir, "report.json")))
    s = m["info"]["summary"]
    t = m["info"]["train"]
    out = [open(preamble).read().rstrip(), "", open(sources).read().rstrip(), ""]
    out += [
        "## Training run",
        "",
        f"- {s['train_rows']:,} training rows ({s['windows']:,} windows incl. calibration), {s['steps']} steps, "
        f"seed {t['seed']}; top {t['train_layers']} layer(s) fine-tuned at lr {t['lr_layers']}, head lr {t['lr_head']}, "
        f"head hidden width {t['head_hidden']}.",
        f"- Calibration split: {s['calibration_rows']:,} rows held out by group; ROC AUC there "
        f"{s['calibration_auc']:.4f}. Platt scaling a = {s['calibration']['a']:.4f}, b = {s['calibration']['b']:.4f}.",
        f"- Thresholds (false-positive rate on the calibration split's benign rows): strict (0.1%) "
        f"{s['thresholds']['strict']:.4f}, balanced (1%) {s['thresholds']['balanced']:.4f}, "
        f"permissive (5%) {s['thresholds']['permissive']:.4f}.",
        "",
        "## Evaluation on dev.jsonl (origins disjoint from training; never trained on)",
        "",
        f"Reproduce: `{r['command'].replace(os.sep.join(['target', 'release', '']), '')}` "
        f"(date {r['date']}). Full tables: `{report_dir}/report.md`.",
        "",
        "| metric | value | target (issue) |",
        "|---|---|---|",
        f"| ROC AUC (attacks vs benign) | {r['auc']:.4f} | ≥ 0.98 |",
    ]
    targets = {0.001: "", 0.01: "≥ 85%", 0.05: ""}
    for fpr, rec, thr, actual in r["recall_at"]:
        out.append(f"| recall at {pct(fpr)} FPR (t = {thr:.4f}) | {pct(rec)} | {targets.get(fpr, '')} |")
    c = r["confusion"]
    prec = c["tp"] / max(1, c["tp"] + c["fp"])
    rec = c["tp"] / max(1, c["tp"] + c["fn_"])
    fpr = c["fp"] / max(1, c["fp"] + c["tn"])
    out.append(f"| at `balanced` (t = {r['threshold']:.4f}): precision / recall / FPR | "
               f"{pct(prec)} / {pct(rec)} / {pct(fpr)} | FPR ≈ 1% |")
    out += ["", "Per source at the `balanced` threshold (attack rows: recall; benign rows: false-positive rate):", "",
            "| source | class | n | flagged | rate |", "|---|---|---|---|---|"]
    for g in r["by_source"]:
        out.append(f"| {g['key']} | {g['label']} | {g['n']} | {g['flagged']} | {pct(g['rate'])} |")
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit("usage: model_card.py MODEL_DIR REPORT_DIR PREAMBLE.md SOURCES.md")
    sys.stdout.write(main(*sys.argv[1:]))

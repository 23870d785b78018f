"""The run report's section on what the synthetic data is worth (TSTR beside TRTR) and what the
model leaks (membership-inference attacks), for any modality whose metrics.json holds them."""

from __future__ import annotations

from typing import Any

from genforge.evaluate.report import esc, table

TITLE = "Synthetic-data utility and membership inference"


def has_results(metrics: dict[str, Any] | None) -> bool:
    records = (metrics or {}).get("metrics", {})
    return "tstr_accuracy" in records or "mia_auc" in records


def render(metrics: dict[str, Any]) -> str:
    records, out = metrics["metrics"], []
    if "tstr_accuracy" in records:
        d = records["tstr_accuracy"]["details"]
        tstr, trtr = d["tstr_per_class"], d["trtr_per_class"]
        rows = [[c, tstr.get(c), trtr.get(c)] for c in sorted(set(tstr) | set(trtr), key=int)]
        out += [
            f"<p><b>TSTR {esc(records['tstr_accuracy']['value'])}</b> beside TRTR {esc(records['trtr_accuracy']['value'])} "
            f"(ratio {esc(records['tstr_ratio']['value'])}): {esc(d['classifier'])}, trained on "
            f"{esc(d['synthetic_count'])} generated samples, or on the {esc(d['real_train_count'])} real training "
            f"examples, tested on the {esc(d['test_count'])} of the {esc(d['test_split'])} split.</p>",
            table(["class", "TSTR accuracy", "TRTR accuracy"], rows),
        ]  # fmt: skip
    if "mia_auc" in records:
        d = records["mia_auc"]["details"]
        rows = [[name, a["kind"], a["auc"], a["tpr_at_1fpr"]] for name, a in sorted(d["attacks"].items())]
        out += [
            f"<p><b>Membership-inference AUC {esc(records['mia_auc']['value'])}</b> (best attack "
            f"{esc(d.get('best_attack'))}; 0.5 = chance) and at most {esc(records['mia_tpr_at_1fpr']['value'])} of the "
            f"members found at 1% false positives: {esc(d['members'])} records of the {esc(d.get('member_split', 'train'))} "
            f"split against {esc(d['non_members'])} of the {esc(d.get('nonmember_split', 'held-out'))} split.</p>",
            table(["attack", "score", "ROC AUC", "TPR at 1% FPR"], rows),
        ]  # fmt: skip
    return "\n".join(out)

"""Evaluation reports: ``report.json``, PNG plots and one self-contained ``report.html``.

The input is the dict returned by ``medtf.evaluation.evaluate_predictions`` (or ``evaluate_run``);
its ``curves`` section holds everything the plots need, so a report can be regenerated from
``report.json`` alone (:func:`write_report` on the loaded JSON). Matplotlib runs with the Agg
backend; the HTML embeds the PNGs as base64 ``data:`` URIs (no external assets, no scripts).
Only pseudonymous keys (``case_0001``, keyed patient pseudonyms) ever appear in the outputs.
"""

from __future__ import annotations

import base64
import html
import json
import math
import pathlib
from typing import Any

import numpy as np

__all__ = ["write_report", "to_jsonable", "PLOT_FILES"]

#: plot name → file written by :func:`write_report` (when the task has the data for it).
PLOT_FILES = {
    "roc": "roc.png",
    "pr": "pr.png",
    "confusion_matrix": "confusion_matrix.png",
    "calibration": "calibration.png",
    "per_case_dice": "per_case_dice.png",
    "restoration": "restoration.png",
}


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types: NumPy scalars/arrays converted, NaN/inf → None, dict keys → str."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _num(v, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    try:
        f = float(v)
    except (TypeError, ValueError):
        return html.escape(str(v))
    return "—" if not math.isfinite(f) else f"{f:.{digits}f}"


# --------------------------------------------------------------------------------------------------
# plots


def _save(fig, path: pathlib.Path) -> pathlib.Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def _plot_roc(curves: dict, op: dict | None, path: pathlib.Path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for c in curves:
        ax.plot(c["fpr"], c["tpr"], lw=1.6, label=f"{c['label']} (AUC {_num(c.get('auc'))})")
    if op is not None and op.get("sensitivity") is not None and op.get("specificity") is not None:
        ax.plot([1 - op["specificity"]], [op["sensitivity"]], "ko", label=f"threshold {_num(op.get('threshold'))}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set(xlabel="1 - specificity (FPR)", ylabel="sensitivity (TPR)", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=7)
    return _save(fig, path)


def _plot_pr(curves: dict, path: pathlib.Path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    for c in curves:
        ax.plot(c["recall"], c["precision"], lw=1.6, label=f"{c['label']} (AP {_num(c.get('ap'))})")
        if c.get("prevalence") is not None:
            ax.axhline(c["prevalence"], ls=":", lw=0.8, c="grey")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower left", fontsize=7)
    return _save(fig, path)


def _plot_confusion(matrices: list, path: pathlib.Path):
    plt = _plt()
    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(min(4.5 * n, 18), 4.2), squeeze=False)
    for ax, item in zip(axes[0], matrices):
        cm = np.asarray(item["matrix"], dtype=np.float64)
        names = item["names"]
        rows = cm.sum(axis=1, keepdims=True)
        frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
        ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
        k = cm.shape[0]
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                        color="white" if frac[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(k), names, fontsize=7)
        ax.set(xlabel="predicted", ylabel="true", title=item.get("title", "confusion matrix"))
    return _save(fig, path)


def _plot_calibration(cal: dict, path: pathlib.Path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 5))
    conf = np.asarray(cal["confidence"], dtype=float)
    acc = np.asarray(cal["accuracy"], dtype=float)
    count = np.asarray(cal["count"], dtype=float)
    edges = np.asarray(cal["edges"], dtype=float)
    centres = (edges[:-1] + edges[1:]) / 2
    ok = count > 0
    ax.bar(centres[ok], acc[ok], width=np.diff(edges)[ok], edgecolor="k", alpha=0.6, label="observed rate per bin")
    ax.plot(conf[ok], acc[ok], "o-", c="C1", ms=3, label="observed vs mean predicted")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8, label="perfect")
    ax.set(xlabel=cal.get("xlabel", "predicted probability"), ylabel=cal.get("ylabel", "observed frequency"),
           title=f"Calibration (ECE {_num(cal.get('ece'))})", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left", fontsize=7)
    return _save(fig, path)


def _plot_dice(per_case: list, class_names: dict, path: pathlib.Path):
    plt = _plt()
    classes = sorted({c for case in per_case for c in case["metrics"]}, key=lambda c: int(c))
    fig, ax = plt.subplots(figsize=(max(5, 0.25 * len(per_case) + 2), 4))
    width = 0.8 / max(len(classes), 1)
    x = np.arange(len(per_case))
    for k, c in enumerate(classes):
        values = [case["metrics"].get(c, {}).get("dice") for case in per_case]
        values = [np.nan if v is None else v for v in values]
        ax.bar(x + k * width, values, width=width, label=class_names.get(str(c), str(c)))
    ax.set_xticks(x + width * (len(classes) - 1) / 2, [c["case"] for c in per_case], rotation=90, fontsize=6)
    ax.set(ylabel="Dice", ylim=(0, 1.02), title="Per-case Dice")
    ax.legend(fontsize=7)
    return _save(fig, path)


def _plot_restoration(m: dict, path: pathlib.Path):
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
    for ax, key in zip(axes, ("psnr", "ssim")):
        values = [v for v in m.get(key, []) if v is not None and math.isfinite(v)]
        ax.hist(values, bins=20, alpha=0.7, label="model")
        others = [(r.get("label") or r.get("method"), r.get(key, [])) for r in (m.get("comparison") or [])
                  if r.get("method") != "model"] or [("input (no model)", (m.get("baseline") or {}).get(key, []))]
        for label, vals in others:
            base = [v for v in vals if v is not None and math.isfinite(v)]
            if base:
                ax.hist(base, bins=20, alpha=0.5, label=str(label))
        ax.set(xlabel=key.upper(), ylabel="images")
        ax.legend(fontsize=7)
    return _save(fig, path)


# --------------------------------------------------------------------------------------------------
# HTML


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em;color:#222;max-width:1100px}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;margin:.5em 1em .5em 0;border:1px solid #eee}.note{color:#555;font-size:.85em}
.warn{background:#fff4e5;border-left:4px solid #e67e22;padding:.6em 1em;margin:1em 0}
.warn img{max-width:360px;display:block}.clinic{background:#f4f8fb;border-left:4px solid #2e86c1;padding:.4em 1em}
"""

#: expected calibration error above which the report warns that probabilities are not risks
ECE_WARNING = 0.1


def report_warnings(report: dict) -> list[str]:
    """Plain-language warnings for a report (today: a badly calibrated classifier)."""
    out = []
    m = report.get("metrics") or {}
    ece = m.get("ece")
    if report.get("task") in ("binary", "multiclass", "ordinal") and isinstance(ece, (int, float)) and ece > ECE_WARNING:
        out.append(f"Poorly calibrated: expected calibration error {ece:.2f} (> {ECE_WARNING:.2f}). The model's "
                   "probabilities are scores, not risks — a 0.8 does not mean an 80% chance. Decisions at the "
                   "threshold below are still valid; see the reliability diagram.")
    return out


def _pct(v) -> str:
    return "–" if v is None or not isinstance(v, (int, float)) or v != v else f"{100 * v:.0f}%"


def _clinical_html(report: dict) -> str:
    """'What these numbers mean' for a binary report, at the chosen threshold."""
    if report.get("task") != "binary":
        return ""
    m = report.get("metrics") or {}
    names = report.get("class_names") or ["negative", "positive"]
    pos, neg = html.escape(str(names[-1])), html.escape(str(names[0]))
    thr = report.get("threshold") or {}
    n, npos = m.get("n") or 0, m.get("positives") or 0
    prev = npos / n if n else None

    def ci(key):
        c = m.get(f"{key}_ci")
        return f" (95% CI {_pct(c[0])}–{_pct(c[1])})" if c and c[0] is not None else ""

    src = str(thr.get("source") or "")
    where = ("chosen on the validation split by medtf train, stored in model.json" if src == "model.json"
             else (f"source: {src}" if src else "chosen on the validation split"))
    lines = [
        f"<p>At the operating threshold {_num(thr.get('value'))} ({html.escape(str(thr.get('method')))}; "
        f"{html.escape(where)}), on these {n} test images ({npos} with <b>{pos}</b>, prevalence "
        f"{_pct(prev)}):</p><ul>",
        f"<li><b>Sensitivity {_pct(m.get('sensitivity'))}</b>{ci('sensitivity')}: of 100 images with {pos}, about "
        f"{_pct(m.get('sensitivity')).rstrip('%')} are flagged; the rest are missed (false negatives: {m.get('fn')}).</li>",
        f"<li><b>Specificity {_pct(m.get('specificity'))}</b>{ci('specificity')}: of 100 images labelled {neg}, about "
        f"{_pct(m.get('specificity')).rstrip('%')} are correctly not flagged (false alarms: {m.get('fp')}).</li>",
        f"<li><b>PPV {_pct(m.get('ppv'))}</b>{ci('ppv')}: a flagged image has {pos} this often. <b>NPV "
        f"{_pct(m.get('npv'))}</b>{ci('npv')}: an unflagged image is truly {neg} this often. PPV and NPV depend on "
        f"the prevalence; at a different prevalence they change, sensitivity and specificity do not.</li>",
        f"<li><b>AUC {_num((m.get('auc') or {}).get('value') if isinstance(m.get('auc'), dict) else m.get('auc'))}</b>: "
        "the chance that a random image with the finding scores higher than a random one without, over all thresholds.</li>",
        "</ul>",
    ]
    return '<div class="clinic"><h2>What these numbers mean</h2>' + "".join(lines) + "</div>"


def _table(header: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def _ci(v: dict | None) -> str:
    if not v:
        return "—"
    return f"{_num(v.get('value'))} ({_num(v.get('ci_low'))}–{_num(v.get('ci_high'))})"


def _prop(m: dict, key: str) -> str:
    ci = m.get(f"{key}_ci")
    if ci and ci[0] is not None:
        return f"{_num(m.get(key))} ({_num(ci[0])}–{_num(ci[1])})"
    return _num(m.get(key))


def _summary_html(report: dict) -> str:
    task = report.get("task")
    m = report.get("metrics", {})
    parts = []
    if task == "binary":
        names = report.get("class_names") or ["negative", "positive"]
        rows = [["positive class", html.escape(str(names[-1]))], ["examples (positives)", f"{m.get('n')} ({m.get('positives')})"],
                ["AUC (95% CI)", _ci(m.get("auc"))], ["average precision", _num(m.get("average_precision"))]]
        rows += [[k, _prop(m, k)] for k in ("accuracy", "sensitivity", "specificity", "ppv", "npv")]
        rows += [["F1", _num(m.get("f1"))], ["Brier score", _num(m.get("brier"))], ["ECE", _num(m.get("ece"))]]
        rows += [["TP / FP / TN / FN", f"{m.get('tp')} / {m.get('fp')} / {m.get('tn')} / {m.get('fn')}"]]
        parts.append(_table(["metric", "value"], rows))
    elif task in ("multiclass", "ordinal"):
        rows = [["macro OvR AUC (95% CI)", _ci(m.get("auc"))], ["accuracy", _prop(m, "accuracy")],
                ["quadratic-weighted kappa", _num(m.get("kappa_quadratic"))], ["ECE (top label)", _num(m.get("ece"))]]
        if task == "ordinal":
            rows.append(["mean absolute grade error", _num(m.get("mae"))])
        rows += [[f"macro {k}", _num(m.get(f"macro_{k}"))] for k in ("sensitivity", "specificity", "ppv", "npv", "f1")]
        parts.append(_table(["metric", "value"], rows))
        per = m.get("per_class", {})
        names = report.get("class_names") or [str(i) for i in range(len(per.get("f1", [])))]
        aucs = (m.get("auc") or {}).get("per_class") or [None] * len(names)
        rows = [[html.escape(str(n)), _num(per["support"][i]), _num(aucs[i])] +
                [_num(per[k][i]) for k in ("sensitivity", "specificity", "ppv", "npv", "f1")] for i, n in enumerate(names)]
        parts.append(_table(["class", "n", "AUC", "sensitivity", "specificity", "PPV", "NPV", "F1"], rows))
    elif task == "multilabel":
        rows = [[k, _num(m.get(k))] for k in ("macro_auc", "macro_f1", "macro_sensitivity", "macro_specificity", "subset_accuracy")]
        parts.append(_table(["metric", "value"], rows))
        names = report.get("class_names") or [str(i) for i in range(len(m.get("per_label", [])))]
        rows = [[html.escape(str(n)), _num(lm.get("positives")), _ci(lm.get("auc")), _num(lm.get("threshold"))] +
                [_prop(lm, k) for k in ("sensitivity", "specificity")] + [_num(lm.get(k)) for k in ("ppv", "npv", "f1", "ece")]
                for n, lm in zip(names, m.get("per_label", []))]
        parts.append(_table(["label", "positives", "AUC (95% CI)", "threshold", "sensitivity", "specificity", "PPV", "NPV", "F1", "ECE"], rows))
    elif task == "segmentation":
        rows = []
        for name, stats in (m.get("per_class") or {}).items():
            row = [html.escape(str(name))]
            for key in ("dice", "iou", "hd95", "hd", "assd"):
                s = stats[key]
                extra = f" [{s['n_undefined']} undefined]" if s.get("n_undefined") else ""
                row.append(f"{_num(s['mean'])} ± {_num(s['sd'])}{extra}")
            rows.append(row)
        parts.append(f"<p>mean Dice over classes: <b>{_num(m.get('mean_dice'))}</b> on {m.get('n_cases')} cases "
                     "(mean ± sd over cases; distances in mm)</p>")
        parts.append(_table(["class", "Dice", "IoU", "HD95 (mm)", "HD (mm)", "ASSD (mm)"], rows))
        if m.get("per_region"):
            rows = [[html.escape(f"{name} {m.get('regions', {}).get(name, '')}")] +
                    [f"{_num(stats[k]['mean'])} ± {_num(stats[k]['sd'])}" for k in ("dice", "iou", "hd95", "hd", "assd")]
                    for name, stats in m["per_region"].items()]
            parts.append("<p>regions (each scored as the union of its labels):</p>")
            parts.append(_table(["region", "Dice", "IoU", "HD95 (mm)", "HD (mm)", "ASSD (mm)"], rows))
        per_case = report.get("per_case") or []
        if per_case:
            classes = sorted({c for case in per_case for c in case["metrics"]}, key=lambda c: int(c))
            cn = report.get("class_names") or []
            header = ["case"] + [f"{cn[int(c)] if int(c) < len(cn) else c} {k}" for c in classes for k in ("Dice", "HD95")]
            rows = [[html.escape(case["case"])] + [_num(case["metrics"].get(c, {}).get(k)) for c in classes for k in ("dice", "hd95")]
                    for case in per_case]
            parts.append("<h2>Per case</h2>" + _table(header, rows))
    elif task == "restoration":
        rows = [["PSNR (dB), mean", _num(m.get("psnr_mean"), 2)], ["SSIM, mean", _num(m.get("ssim_mean"), 4)]]
        base = m.get("baseline") or {}
        if m.get("comparison"):  # paired targets: input, classical baseline, model
            rows = [[html.escape(str(r.get("label") or r.get("method"))), _num(r.get("psnr_mean"), 2),
                     _num(r.get("ssim_mean"), 4)] for r in m["comparison"]]
            parts.append(_table(["method", "PSNR (dB), mean", "SSIM, mean"], rows))
            notes = [html.escape(str(r["note"])) for r in m["comparison"] if r.get("note")]
            parts.append(f"<p>PSNR gain of the model: {_num(m.get('psnr_gain_vs_classical_db'), 2)} dB over the "
                         f"classical baseline, {_num(m.get('psnr_gain_vs_input_db'), 2)} dB over the input"
                         f"{(' (' + '; '.join(notes) + ')') if notes else ''}</p>")
            base = {}
            rows = None
        elif base:
            rows += [["input PSNR (no model)", _num(base.get("psnr_mean"), 2)], ["input SSIM (no model)", _num(base.get("ssim_mean"), 4)]]
        if rows is not None:
            parts.append(_table(["metric", "value"], rows))
    return "\n".join(parts)


def _html(report: dict, images: dict[str, pathlib.Path], title: str) -> str:
    thr = report.get("threshold")
    info = [f"task: <b>{html.escape(str(report.get('task')))}</b>", f"examples: <b>{report.get('n')}</b>"]
    if report.get("split"):
        info.append(f"split: <b>{html.escape(str(report['split']))}</b>")
    if report.get("tta"):
        info.append(f"test-time augmentation: <b>{html.escape(str(report.get('tta_mode') or 'flip'))}</b>")
    if isinstance(thr, dict) and thr.get("value") is not None:
        info.append(f"threshold: <b>{_num(thr['value'])}</b> ({html.escape(str(thr.get('method')))}, from {html.escape(str(thr.get('source')))})")
    imgs = []
    for name, path in images.items():
        data = base64.b64encode(pathlib.Path(path).read_bytes()).decode("ascii")
        imgs.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
    notes = html.escape(report.get("notes", ""))
    warns = ""
    for w in report.get("warnings") or []:
        img = ""
        if "calibration" in images and "calibrat" in w.lower():
            data = base64.b64encode(pathlib.Path(images["calibration"]).read_bytes()).decode("ascii")
            img = f'<img alt="reliability diagram" src="data:image/png;base64,{data}">'
        warns += f'<div class="warn"><b>Warning.</b> {html.escape(w)}{img}</div>'
    return (
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{' · '.join(info)}</p>{warns}"
        f"{_clinical_html(report)}"
        f"<h2>Metrics</h2>{_summary_html(report)}"
        f"<h2>Plots</h2>{''.join(imgs) or '<p>none</p>'}"
        f"<p class=\"note\">{notes}</p>"
        f"<p class=\"note\">medtf {html.escape(str(report.get('medtf_version', '')))} · only pseudonymous case keys are shown.</p>"
        "</body></html>"
    )


def write_report(report: dict, out_dir, *, title: str = "medtf evaluation", plots: bool = True) -> dict[str, pathlib.Path]:
    """Write ``report.json``, the PNG plots the task supports, and ``report.html``.

    Args:
        report: the dict from ``evaluate_predictions`` / ``evaluate_run`` (or a loaded ``report.json``).
        out_dir: output folder (created).
        title: heading of the HTML page.
        plots: draw the PNGs (and embed them in the HTML).

    Returns:
        ``{"json": path, "html": path, <plot name>: path, ...}``.

    Raises:
        ValueError: ``report`` lacks the ``task`` key.
    """
    if "task" not in report:
        raise ValueError(f"report must come from evaluate_predictions (a dict with 'task'). Received keys: {sorted(report)}")
    from medtf import __version__

    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = dict(report)
    report.setdefault("medtf_version", __version__)
    written: dict[str, pathlib.Path] = {}
    curves = report.get("curves") or {}
    if plots:
        if curves.get("roc"):
            written["roc"] = _plot_roc(curves["roc"], curves.get("operating_point"), out / PLOT_FILES["roc"])
        if curves.get("pr"):
            written["pr"] = _plot_pr(curves["pr"], out / PLOT_FILES["pr"])
        if curves.get("confusion"):
            written["confusion_matrix"] = _plot_confusion(curves["confusion"], out / PLOT_FILES["confusion_matrix"])
        if curves.get("calibration"):
            written["calibration"] = _plot_calibration(curves["calibration"], out / PLOT_FILES["calibration"])
        if report.get("task") == "segmentation" and report.get("per_case"):
            names = {str(i): n for i, n in enumerate(report.get("class_names") or [])}
            written["per_case_dice"] = _plot_dice(report["per_case"], names, out / PLOT_FILES["per_case_dice"])
        if report.get("task") == "restoration" and report.get("metrics", {}).get("psnr"):
            written["restoration"] = _plot_restoration(report["metrics"], out / PLOT_FILES["restoration"])
    report["plots"] = {k: p.name for k, p in written.items()}
    report["warnings"] = report_warnings(report)
    json_path = out / "report.json"
    json_path.write_text(json.dumps(to_jsonable(report), indent=1, allow_nan=False) + "\n")
    html_path = out / "report.html"
    html_path.write_text(_html(to_jsonable(report), written, title), encoding="utf-8")
    return {"json": json_path, "html": html_path, **written}

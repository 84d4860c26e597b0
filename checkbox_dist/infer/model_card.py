"""The model card (README.md) of an `export --format timm` folder, in the Hugging Face format.

YAML front matter (library `timm`, tags, metrics, model-index), then: what the model does, the data it was
trained on, the recipe and its scores (the checkpoint's val split; a cross-validation score when one is
given), the exact preprocessing, a short snippet that reproduces `checkbox-dist predict`'s probabilities
with timm + PIL + numpy only, intended use and limitations. The snippet is generated from the checkpoint's
preprocessing spec (letterbox or stretch, background, alpha channel), reads everything else from
config.json, and is what the tests run, extracted from the card.
"""

from __future__ import annotations

import yaml

from checkbox_dist.core.cv_results import estimate_line
from checkbox_dist.data.images import PreprocessSpec, parse_color

USAGE_HEADING = "## How to get the same probabilities with timm"
CONFIG_FILE = "training_config.yaml"  # the run's config, ready for `checkbox-dist train --config`


def snippet(spec: PreprocessSpec) -> str:
    """Python code (timm, torch, numpy, PIL) computing our probabilities for one image file."""
    background = parse_color(spec.background)
    bg = ", ".join(str(c) for c in background)
    if spec.resize == "letterbox":
        resize = ["    s = min(W / img.width, H / img.height)  # letterbox: keep the aspect ratio, centre, pad",
                  "    w, h = max(1, round(img.width * s)), max(1, round(img.height * s))",
                  f"    canvas = Image.new(\"RGBA\", (W, H), ({bg}, 0))",
                  "    canvas.paste(img.resize((w, h), Image.BILINEAR, reducing_gap=3.0), "
                  "((W - w) // 2, (H - h) // 2))",
                  "    a = np.asarray(canvas, dtype=np.float32)"]
    else:
        resize = ["    img = img.resize((W, H), Image.BILINEAR, reducing_gap=3.0)  # stretch to W x H",
                  "    a = np.asarray(img, dtype=np.float32)"]
    composite = f"(a[..., :3] * alpha + np.float32([{bg}]) * (1.0 - alpha)).round().clip(0, 255)"
    if spec.alpha_channel:
        pixels = [f"    rgb = {composite}",
                  "    pixels = np.concatenate([rgb, a[..., 3:]], axis=-1).astype(np.uint8)  # 4th channel: alpha"]
    else:
        pixels = [f"    pixels = {composite}.astype(np.uint8)"]
    lines = ["import json, numpy as np, timm, torch",
             "from PIL import Image",
             "",
             "folder = \".\"  # this folder: a local copy, or `hf download REPO --local-dir DIR`",
             "cfg = json.load(open(f\"{folder}/config.json\"))",
             "model = timm.create_model(f\"local-dir:{folder}\", pretrained=True).eval()",
             "_, H, W = cfg[\"pretrained_cfg\"][\"input_size\"]",
             "mean, std = (torch.tensor(cfg[\"pretrained_cfg\"][k]).view(-1, 1, 1) for k in (\"mean\", \"std\"))",
             "",
             "def predict(path):",
             "    img = Image.open(path).convert(\"RGBA\")",
             *resize,
             f"    alpha = a[..., 3:] / 255.0  # transparent pixels are composited over {spec.background}",
             *pixels,
             "    x = (torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0 - mean) / std",
             "    with torch.no_grad():",
             "        logits = model(x[None].contiguous())",
             "    probs = torch.softmax(logits / cfg[\"checkbox_dist\"][\"temperature\"], dim=1)[0]",
             "    return dict(zip(cfg[\"label_names\"], probs.tolist()))",
             "",
             "print(predict(\"crop.png\"))"]
    return "\n".join(lines) + "\n"


def front_matter(payload: dict, name: str, license_id: str, cv: dict | None) -> str:
    metrics = payload.get("metrics", {})
    results = []
    if cv:
        k = cv["folds"]
        results += [{"type": "accuracy", "value": round(cv["top1"]["mean"], 4), "name": f"{k}-fold CV top-1 (mean)"},
                    {"type": "f1", "value": round(cv["macro_f1"]["mean"], 4), "name": f"{k}-fold CV macro-F1 (mean)"}]
    for key, kind, label in (("val_top1", "accuracy", "val top-1 (this model)"),
                             ("val_macro_f1", "f1", "val macro-F1 (this model)")):
        if isinstance(metrics.get(key), (int, float)):
            results.append({"type": kind, "value": round(float(metrics[key]), 4), "name": label})
    meta = {"library_name": "timm", "license": license_id, "pipeline_tag": "image-classification",
            "tags": ["image-classification", "timm", "checkbox-dist", "ui-widgets", "checkbox"],
            "metrics": ["accuracy", "f1"],
            "model-index": [{"name": name, "results": [{
                "task": {"type": "image-classification", "name": "Image Classification"},
                "dataset": {"type": "imagefolder", "name": data_name(payload.get("config", {}))},
                "metrics": results}]}]}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def data_name(config: dict) -> str:
    root = config.get("data", {}).get("root", "")
    if not root:
        return "checkbox-dist synthetic UI widgets"
    parts = [p for p in str(root).rstrip("/").split("/") if p]
    return "/".join(parts[-2:]) if parts and parts[-1] in ("train", "val", "all") else (parts[-1] if parts else root)


def data_section(config: dict) -> list[str]:
    data, pre, train = config.get("data", {}), config.get("pretrain", {}), config.get("train", {})
    if data.get("root") and data.get("val_fraction", 0.2) == 0 and not data.get("split_file"):
        lines = [f"Labelled crops from `{data['root']}` (one folder per class), **all of them** trained on: a refit, "
                 f"with no validation split."]
    elif data.get("root"):
        split = (f"the split in `{data['split_file']}`" if data.get("split_file") else
                 f"a stratified {1 - data.get('val_fraction', 0.2):.0%}/{data.get('val_fraction', 0.2):.0%} "
                 f"train/val split (seed {data.get('split_seed')})")
        lines = [f"Labelled crops from `{data['root']}` (one folder per class), {split}."]
    else:
        lines = [f"The embedded synthetic UI-widget set: {data.get('synth_n')} images generated with seed "
                 f"{data.get('synth_seed')} (`checkbox-dist synth --out DIR --n {data.get('synth_n')} --seed "
                 f"{data.get('synth_seed')}`), split {1 - data.get('val_fraction', 0.2):.0%}/"
                 f"{data.get('val_fraction', 0.2):.0%} into train/val."]
    if data.get("exclude_file"):
        lines.append(f"Files listed in `{data['exclude_file']}` (label audit) were left out.")
    if pre.get("synth_n"):
        lines.append(f"Stage one: pretrained on {pre['synth_n']} synthetic widgets (seed {pre.get('synth_seed')}, "
                     f"labels by {pre.get('labels')}, {pre.get('epochs')} epochs), then fine-tuned on the data above.")
    elif train.get("init_from"):
        lines.append(f"Fine-tuned from the weights of `{train['init_from']}`.")
    if pre.get("mix_n"):
        lines.append(f"{pre['mix_n']} synthetic images (seed {pre.get('mix_seed')}) were mixed into the training "
                     f"split (never into val).")
    return lines


def selection_text(ev: dict, selection: dict | None) -> str:
    """Which epoch the model is and why: the run's `selection` record (train/selection.py), else the config's rule."""
    if not selection:
        return f"best epoch by `{ev.get('best_rule')}`"
    text = (f"epoch {selection['epoch']} of {selection['last_epoch']} kept by `eval.best_rule: {selection['rule']}` "
            f"({selection['why']}) on {selection['val_n']} val images")
    if selection.get("small_val") and selection["rule"] != "final":
        text += " (few images: the choice of epoch is noisy)"
    return text


def recipe_section(config: dict, spec: PreprocessSpec, selection: dict | None = None) -> list[str]:
    model, optim, sched = config.get("model", {}), config.get("optim", {}), config.get("schedule", {})
    train, data, ev = config.get("train", {}), config.get("data", {}), config.get("eval", {})
    refit = data.get("val_fraction", 0.2) == 0 and not data.get("split_file")
    pretrained = model.get("pretrained")
    start = ("ImageNet weights from timm" if pretrained is True or pretrained == "true" else
             f"weights from `{pretrained}`" if pretrained else "random initialisation")
    augment = {k: v for k, v in data.get("augment", {}).items() if v not in (0, 0.0, [1.0, 1.0], None)}
    extras = [f"{k} {train[k]}" for k in ("label_smoothing", "ema_decay", "mixup_alpha", "cutmix_alpha")
              if train.get(k)]
    return [f"- model: timm `{model.get('name')}` ({start}), global pool `{model.get('global_pool') or 'default'}`",
            f"- input: {spec.size_text} ({spec.resize}, background {spec.background}"
            f"{', alpha as a 4th channel' if spec.alpha_channel else ''})",
            f"- optimizer: {optim.get('name')} lr {optim.get('lr')} weight decay {optim.get('weight_decay')}, "
            f"{sched.get('name')} schedule (warm-up {sched.get('warmup_epochs')} epochs)",
            f"- {train.get('epochs')} epoch(s) at batch {data.get('batch_size')} per process, "
            + ("the final weights (refit: nothing held out to choose an epoch on)" if refit else
               selection_text(ev, selection)) + (", " + ", ".join(extras) if extras else ""),
            f"- augmentation: {', '.join(f'{k} {v}' for k, v in augment.items()) or 'none'}",
            f"- temperature scaling: {calibration_text(config, ev)}"]


def calibration_text(config: dict, ev: dict, refit_block: dict | None = None) -> str:
    if config.get("data", {}).get("val_fraction", 0.2) == 0:
        return (refit_block or {}).get("calibration") or (f"from the CV run `{ev.get('cv_dir')}`'s out-of-fold "
                                                          f"predictions" if ev.get("cv_dir") else "none (uncalibrated)")
    return f"fitted on the val split: {'yes' if ev.get('calibrate', True) else 'no'}"


def scores_section(payload: dict, cv: dict | None, cv_command: str, cv_notes: list[str]) -> list[str]:
    m = payload.get("metrics", {})
    lines = []
    refit = m.get("refit")
    if refit:
        lines += [f"**This model has no held-out figure**: it is a refit, trained on every labelled image with a fixed "
                  f"schedule and its final weights kept. {_sentence(refit.get('calibration', ''))}.", ""]
        if refit.get("cv_estimate") and not cv:
            lines += [f"The estimate of its recipe: {estimate_line(refit['cv_estimate'])}.", ""]
    if cv:
        lines += [f"**Cross-validation** ({cv['folds']} folds, {cv['n_images']} images, selection `{cv['selection']}`, "
                  f"{cv.get('std_kind', 'std over folds')}): "
                  f"top-1 **{cv['top1']['mean']:.4f} ± {cv['top1']['std']:.4f}**, "
                  f"macro-F1 {cv['macro_f1']['mean']:.4f} ± {cv['macro_f1']['std']:.4f}. Command:", "",
                  "```bash", cv_command, "```", ""]
        lines += cv_notes
    elif not (refit and refit.get("cv_estimate")):
        lines.append("No cross-validation score was attached to this export (`export --cv-summary "
                     "OUT/cv_summary.json` adds one); the numbers below come from one val split.")
    if "val_top1" in m:
        lines += ["", f"**This model** on its val split (epoch {payload.get('epoch')}): top-1 {m['val_top1']:.4f}, "
                      f"macro-F1 {m.get('val_macro_f1', float('nan')):.4f}, "
                      f"loss {m.get('val_loss', float('nan')):.4f}; "
                      f"ECE {m.get('ece_before_calibration', m.get('val_ece', float('nan'))):.4f} before and "
                      f"{m.get('ece_after_calibration', float('nan')):.4f} after temperature scaling "
                      f"(T = {float(payload.get('temperature', 1.0)):.4f})."]
    return lines


def preprocessing_section(spec: PreprocessSpec, temperature: float, fitted_on: str = "the val split") -> list[str]:
    height, width = spec.height_width
    mean, std = spec.normalization
    resize = (f"**letterbox**: scale by min({width}/w, {height}/h), size rounded to whole pixels (at least 1), "
              f"PIL bilinear with `reducing_gap=3.0`, pasted centred (offset floored) on a {width}x{height} "
              f"canvas of the background colour with alpha 0"
              if spec.resize == "letterbox" else
              f"**stretch**: PIL bilinear resize to exactly {width}x{height} (`reducing_gap=3.0`), "
              "aspect ratio not kept")
    return ["1. Open the file with PIL and convert it to RGBA (first frame of an animation).",
            f"2. {resize}.",
            f"3. Composite alpha over **{spec.background}**: rgb = rgb * a + background * (1 - a), a = alpha / 255, "
            f"in float32, rounded to uint8. Transparent pixels become the background, never black."
            + (" The alpha channel itself is kept as a 4th input channel." if spec.alpha_channel else ""),
            f"4. Scale to [0, 1] and normalise per channel: mean {list(mean)}, std {list(std)} "
            f"(config.json `pretrained_cfg`).",
            f"5. Probabilities are softmax(logits / T) with the temperature T = {temperature:.6g} ({fitted_on}; "
            f"config.json `checkbox_dist.temperature`). timm returns logits: apply T yourself, or the "
            f"confidences are not calibrated (argmax is the same either way)."]


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fitted_on(payload: dict) -> str:
    refit = payload.get("metrics", {}).get("refit")
    return refit["calibration"] if refit else "fitted on the val split"


def limitations_section(spec: PreprocessSpec, classes: list[str]) -> list[str]:
    crop = "border" if spec.resize == "letterbox" else "squash"
    return [f"- It classifies one tightly cropped control into {', '.join(classes)}; it does not find controls in "
            f"a screenshot. Anything that is not a checkbox/radio-like control should come out as `other` only "
            f"insofar as such things were in the training data.",
            "- The scores above are measured on held-out crops from the training data's own sources; crops from other "
            "applications, themes or scales may score lower: re-measure on yours "
            "(`checkbox-dist eval --checkpoint THIS_FOLDER --data DIR`).",
            f"- timm's own `create_transform(**resolve_data_config(model=model))` (crop_mode `{crop}`, crop_pct 1.0) "
            f"comes close but is not the same preprocessing: it does not composite alpha over the background and "
            f"resizes without `reducing_gap`; use the snippet above for the published numbers.",
            "- 16-bit and float images: `checkbox-dist predict` rescales them to 8 bits first; PIL's "
            "`convert(\"RGBA\")` in the snippet clips them. EXIF orientation is not applied by either.",
            "- Horizontal-flip test-time augmentation hurts models trained without flips."]


def card(payload: dict, name: str, license_id: str, cv: dict | None = None, cv_command: str = "",
         cv_notes: list[str] | None = None, export_command: str = "") -> str:
    """The README.md text."""
    spec = PreprocessSpec.from_dict(payload["preprocess"])
    config, classes = payload.get("config", {}), payload["classes"]
    temperature = float(payload.get("temperature", 1.0))
    body = [f"# {name}", "",
            f"Classifies a crop of a UI control into one of {len(classes)} classes, in this order (logit index): "
            + ", ".join(f"`{c}`" for c in classes) + f". A timm `{payload['model_name']}` trained with checkbox-dist"
            f" (epoch {payload.get('epoch')}); exported with `{export_command}`.", "",
            "## Training data", "", *data_section(config), "",
            "## Recipe and scores", "",
            *recipe_section(config, spec, payload.get("metrics", {}).get("selection")), "",
            f"To train it again: `checkbox-dist train --config {CONFIG_FILE}` ({CONFIG_FILE} is in this folder; "
            f"point `data.root` at your copy of the data).", "",
            *scores_section(payload, cv, cv_command, cv_notes or []), "",
            "## Preprocessing (exact)", "", *preprocessing_section(spec, temperature, _fitted_on(payload)), "",
            USAGE_HEADING, "",
            "With timm, torch, numpy and PIL only (no checkbox-dist), this gives the probabilities "
            "`checkbox-dist predict` gives (measured difference below 1e-6):", "",
            "```python", snippet(spec).rstrip("\n"), "```", "",
            "With checkbox-dist: `checkbox-dist predict --checkpoint THIS_FOLDER crop.png` (also `eval`, `serve`).",
            "",
            "## Intended use", "",
            "Sorting cropped UI controls (form checkboxes, radio buttons and look-alikes) by state in screenshots "
            "or rendered documents, where a person or a later step can act on low-confidence results: the "
            "confidences are calibrated, so a threshold on them means what it says.", "",
            "## Limitations", "", *limitations_section(spec, classes), ""]
    return front_matter(payload, name, license_id, cv) + "\n" + "\n".join(body)

"""`checkbox-dist predict` through the real CLI: files, folders, globs, URLs from a local web server, every
URL failure as one line while the rest is still predicted, output formats, exit codes, ensemble + TTA.

~25 s on 2 shared cores (most of it the session's tiny training run and four CLI processes).
"""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
import torch

from conftest import run_cli, run_main


def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def _check_probabilities(record: dict, classes=("checked", "other", "unchecked")) -> None:
    conf = record["confidence"]
    assert list(conf) == list(classes)
    assert abs(sum(conf.values()) - 1) < 1e-4, conf
    assert record["class"] == max(conf, key=conf.get)
    assert record["score"] == pytest.approx(conf[record["class"]], abs=1e-6)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, synth_root):
    """A folder with nested images, a loose file, a non-image file and a glob target."""
    root = tmp_path_factory.mktemp("inputs")
    nested = root / "folder" / "deeper"
    nested.mkdir(parents=True)
    checked = sorted((synth_root / "checked").glob("*.png"))
    other = sorted((synth_root / "other").glob("*.png"))
    shutil.copy(checked[0], root / "folder" / "a.png")
    shutil.copy(checked[1], nested / "b.png")
    (root / "folder" / "notes.txt").write_text("not an image, and not picked up from a folder")
    shutil.copy(other[0], root / "single.png")
    globbed = root / "globbed"
    globbed.mkdir()
    for i in range(3):
        shutil.copy(other[i + 1], globbed / f"g{i}.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return root


def test_files_folders_globs_urls_and_every_failure(infer_checkpoint, inputs, image_server):
    ok = [str(inputs / "single.png"), str(inputs / "folder"), str(inputs / "globbed" / "*.png"),
          f"{image_server}/good.png", f"{image_server}/redirect"]
    failures = {  # input -> what its one error line must say
        f"{image_server}/missing.png": "HTTP 404",
        f"{image_server}/hang.png": "timed out after 1 s",
        f"{image_server}/big.png": "over the 1,048,576 byte limit",
        f"{image_server}/big-stream": "over the 1,048,576 byte limit",
        f"{image_server}/page.html": "not an image (content-type text/html)",
        f"{image_server}/fake.png": "not an image",
        f"{image_server}/loop": "too many redirects",
        f"{image_server}/to-file": "redirected to a non-http(s) URL",
        "file:///etc/passwd": "only http:// and https:// URLs",
        str(inputs / "broken.png"): "unreadable image",
        str(inputs / "nothing-here.png"): "no such file or folder",
        str(inputs / "*.webp"): "no image files match",
    }
    args = ["predict", "--checkpoint", str(infer_checkpoint), "--format", "jsonl", "--timeout", "1",
            "--max-mb", "1", "--max-redirects", "3", *ok[:2], *list(failures)[:6], *ok[2:], *list(failures)[6:]]
    proc = run_cli(*args, check=False)
    assert proc.returncode == 1, proc.stderr  # some inputs failed
    assert "Traceback" not in proc.stderr
    records = _records(proc.stdout)
    predicted = [r for r in records if "error" not in r]
    # single.png + folder (a.png, deeper/b.png; notes.txt skipped) + 3 globbed + 2 URLs
    assert len(predicted) == 1 + 2 + 3 + 2
    for r in predicted:
        _check_probabilities(r)
    assert [r["input"] for r in predicted][:3] == [str(inputs / "single.png"), str(inputs / "folder" / "a.png"),
                                                   str(inputs / "folder" / "deeper" / "b.png")]
    # the good URL and the one redirected to it give the same answer
    by_input = {r["input"]: r for r in records}
    assert by_input[f"{image_server}/good.png"]["confidence"] == by_input[f"{image_server}/redirect"]["confidence"]
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == len(failures), proc.stderr
    for source, reason in failures.items():
        mine = [line for line in error_lines if line.startswith(f"error: {source}:")]
        assert len(mine) == 1 and reason in mine[0], (source, reason, error_lines)
        assert by_input[source]["error"].startswith(source)
    assert f"{len(predicted)} predicted, {len(failures)} failed" in proc.stderr


def test_formats_output_file_and_image_url_spelling(infer_checkpoint, inputs, image_server, tmp_path):
    folder = str(inputs / "folder")
    out = tmp_path / "preds.json"
    code, stdout, stderr = run_main("predict", "--checkpoint", str(infer_checkpoint), folder, "--format", "json",
                                    "--output", str(out), f"--image_url={image_server}/good.png")
    assert code == 0 and stdout == "" and f"wrote {out}: 3 predicted, 0 failed" in stderr
    records = json.loads(out.read_text())
    assert [r["input"] for r in records][-1] == f"{image_server}/good.png"
    for r in records:
        _check_probabilities(r)

    for fmt in ("csv", "table"):
        code, text, _ = run_main("predict", "--checkpoint", str(infer_checkpoint), folder, "--format", fmt,
                                 "--no-progress")
        assert code == 0
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(text)))
            assert [r["input"] for r in rows] == [r["input"] for r in records[:2]]
            for row, record in zip(rows, records):
                assert row["class"] == record["class"] and row["error"] == ""
                assert sum(float(row[c]) for c in ("checked", "other", "unchecked")) == pytest.approx(1, abs=1e-4)
        else:
            lines = text.splitlines()
            assert lines[0].split() == ["input", "class", "checked", "other", "unchecked"]
            assert len(lines) == 3 and lines[1].split()[1] == records[0]["class"]
            assert float(lines[1].split()[2]) == pytest.approx(records[0]["confidence"]["checked"], abs=1e-3)


def test_ensemble_of_two_different_members_with_tta(infer_checkpoint, inputs, tmp_path):
    """`--checkpoint A --checkpoint B --tta`: the mean over the members of each one's mean over the image and its
    mirror, computed here by hand. B is A with its classifier head re-drawn, so the members disagree and an
    ensemble that used only one member (or averaged a member with itself) fails."""
    from checkbox_dist.infer.predictor import Predictor
    from checkbox_dist.model import checkpoint

    payload, _ = checkpoint.load(infer_checkpoint)
    generator = torch.Generator().manual_seed(0)
    weights = {k: (torch.randn(v.shape, generator=generator) if k.startswith("fc.") else v)
               for k, v in payload["model"].items()}
    other = tmp_path / "other"
    checkpoint.save(other, dict(payload, model=weights), None)
    code, stdout, _ = run_main("predict", "--checkpoint", str(infer_checkpoint), "--checkpoint", str(other), "--tta",
                               "--format", "jsonl", str(inputs / "single.png"))
    assert code == 0
    [record] = _records(stdout)
    _check_probabilities(record)

    def tta(member) -> torch.Tensor:
        predictor = Predictor([member], device="cpu")
        image = predictor.decode(inputs / "single.png")[0]
        return ((predictor.predict_tensors([image[None]]) + predictor.predict_tensors([image.flip(-1)[None]])) / 2)[0]

    a, b = tta(infer_checkpoint), tta(other)
    assert float((a - b).abs().max()) > 0.05, (a, b)  # the members really differ
    expected = (a + b) / 2
    got = torch.tensor([record["confidence"][c] for c in ("checked", "other", "unchecked")])
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)


USAGE_ERRORS = {  # case -> (arguments after the checkpoint; TMP = the test's folder, SINGLE = an image), message
    "checkpoint not found": (["SINGLE", "--checkpoint", "TMP/no-such-run"], "checkpoint not found"),
    "no input": ([], "give at least one INPUT"),
    "output folder missing": (["SINGLE", "--output", "TMP/no/x.json"], "--output: folder not found"),
    "onnx backend, no model.onnx": (["SINGLE", "--backend", "onnx", "--checkpoint", "TMP/copy"],
                                    "run `checkbox-dist export"),
}


@pytest.mark.parametrize("case", list(USAGE_ERRORS))
def test_usage_errors_are_one_line_and_exit_2(infer_checkpoint, inputs, tmp_path, case):
    shutil.copytree(infer_checkpoint, tmp_path / "copy", ignore=shutil.ignore_patterns("*.onnx"))  # no model.onnx
    args, message = USAGE_ERRORS[case]
    args = [a.replace("SINGLE", str(inputs / "single.png")).replace("TMP", str(tmp_path)) for a in args]
    checkpoint = [] if "--checkpoint" in args else ["--checkpoint", str(infer_checkpoint)]
    code, _, err = run_main("predict", *checkpoint, *args)
    assert code == 2 and err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1


def test_crafted_files_are_listed_and_every_good_result_is_written(infer_checkpoint, inputs, tmp_path):
    from hostile_images import CRAFTED

    for name, data in CRAFTED.items():
        (tmp_path / name).write_bytes(data)
    out = tmp_path / "preds.jsonl"
    proc = run_cli("predict", "--checkpoint", str(infer_checkpoint), str(inputs / "single.png"),
                   *[str(tmp_path / n) for n in CRAFTED], str(inputs / "folder"), "--format", "jsonl",
                   "--output", str(out), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    records = _records(out.read_text())
    assert len(records) == 3 + len(CRAFTED)
    good = [r for r in records if "error" not in r]
    assert len(good) == 3
    for record in good:
        _check_probabilities(record)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert sorted(errors) == sorted(f"error: {r['error']}" for r in records if "error" in r)
    assert all(r["error"].startswith(r["input"] + ": ") for r in records if "error" in r)


def test_fuzz_corpus_through_predict(infer_checkpoint, tmp_path):
    """100 mutated files (fixed seed) in a folder: one record each, exit 0 or 1, never a traceback."""
    from hostile_images import mutants

    corpus = mutants(100, 0)
    for name, data in corpus:
        (tmp_path / name).write_bytes(data)
    proc = run_cli("predict", "--checkpoint", str(infer_checkpoint), str(tmp_path), "--format", "jsonl", check=False)
    assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert len(_records(proc.stdout)) == len(corpus)


def test_globs_over_symlink_loops_end_and_names_cannot_forge_lines(infer_checkpoint, inputs, tmp_path):
    """Defect 7 of issue 33: a `**` glob over two self-symlinks ends, a symlink loop yields each file once, and
    a file name holding a newline is one escaped label (no forged table rows or `error:` lines)."""
    root = tmp_path / "loops"
    root.mkdir()
    shutil.copy(inputs / "single.png", root / "a.png")
    (root / "self1").symlink_to(".")
    (root / "self2").symlink_to(".")
    proc = run_cli("predict", "--checkpoint", str(infer_checkpoint), f"{root}/**/*.png", "--format", "jsonl",
                   timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [r["input"] for r in _records(proc.stdout)] == [str(root / "a.png")]

    names = tmp_path / "names"
    names.mkdir()
    shutil.copy(inputs / "single.png", names / "good\nforged-row  checked  1.000.png")
    (names / "bad\nerror: forged line.png").write_bytes(b"not an image")
    proc = run_cli("predict", "--checkpoint", str(infer_checkpoint), str(names), check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    table = proc.stdout.splitlines()
    assert len(table) == 2 and "\\n" in table[1] and not any(line.startswith("forged") for line in table), table
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: ") and "\\nerror: forged line" in errors[0], errors

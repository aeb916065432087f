"""JSONL files whose last line was cut by kill -9 or a full disk: the next record starts a new line,
no valid record is lost, and readers skip the cut line with a warning that names the file.

gan.files' functions in-process; then the real writers: training's train_log.jsonl on resume, and
the HTML report that reads both files (evaluate.py's metrics.jsonl: tests/test_evaluate.py).
"""

import json
import shutil

from helpers import PYTHON, TINY, run, train

from gan.files import append_jsonl, open_jsonl, read_jsonl


def cut_last_line(path) -> bytes:
    """Cut the file in the middle of its last record, as kill -9 during a write() can; returns the rest."""
    data = path.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    cut = data[: start + (len(data) - start) // 2]
    path.write_bytes(cut)
    return cut[start:]


def write_lines(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_append_after_a_cut_line_starts_a_new_line(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    write_lines(path, [{"step": 1, "fid": 10.5}, {"step": 2, "fid": 9.25}])
    cut_last_line(path)
    append_jsonl(path, {"step": 3, "fid": 8.0})
    assert read_jsonl(path) == [{"step": 1, "fid": 10.5}, {"step": 3, "fid": 8.0}]
    warning = capsys.readouterr().err
    assert f"warning: {path}: skipped line 2" in warning
    append_jsonl(path, {"step": 4, "fid": 7.0})  # a file that ends in a newline gets no empty line
    assert path.read_text().endswith('\n{"step": 3, "fid": 8.0}\n{"step": 4, "fid": 7.0}\n')


def test_writer_after_a_cut_line_starts_a_new_line(tmp_path, capsys):
    path = tmp_path / "train_log.jsonl"
    write_lines(path, [{"step": 1, "loss/D": 1.5}, {"step": 2, "loss/D": 1.25}])
    cut_last_line(path)
    writer = open_jsonl(path)
    writer.write({"step": 3, "loss/D": 1.0})
    writer.write({"step": 4, "loss/D": None})
    writer.close()
    assert [r["step"] for r in read_jsonl(path)] == [1, 3, 4]
    assert "train_log.jsonl: skipped line 2" in capsys.readouterr().err


def test_reader_skips_what_is_not_a_record_and_warns_once(tmp_path, capsys):
    path = tmp_path / "metrics.jsonl"
    assert read_jsonl(path) == []  # no file yet
    nested = b"[" * 100_000  # json.loads raises RecursionError, not ValueError
    path.write_bytes(b'{"step": 1}\n\n[1, 2]\n\xff\xfe\n' + nested + b'\n{"step": 2}\n{"step": 3, "fi')
    assert read_jsonl(path) == [{"step": 1}, {"step": 2}]
    assert read_jsonl(path, warn=True) == [{"step": 1}, {"step": 2}]  # the same bad lines: said once
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "skipped 4 lines (first: line 3)" in err
    assert read_jsonl(path, warn=False) == [{"step": 1}, {"step": 2}]
    assert capsys.readouterr().err == ""


def test_a_resumed_run_keeps_logging_after_a_cut_train_log(tmp_path):
    """Training killed while writing step 3's line: the resumed run's step 4 is not glued onto it."""
    run_dir = tmp_path / "run"
    overrides = [*TINY, "train.log_every=1"]
    train("dcgan_mnist", run_dir, *overrides, "train.steps=3")
    log = run_dir / "train_log.jsonl"
    cut_last_line(log)
    proc = train("dcgan_mnist", run_dir, *overrides)  # train.steps=6, resumes from step-0000003
    lines = log.read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines[:2]] == [1, 2]  # the records before the cut line
    assert [json.loads(line)["step"] for line in lines[3:]] == [4, 5, 6]  # each one on its own line
    assert f"warning: {log}: skipped line 3" in proc.stderr


def test_the_report_reads_cut_files_with_a_warning(dcgan_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(dcgan_run, run_dir)
    write_lines(run_dir / "metrics.jsonl", [{"step": 3, "kimg": 0.048, "fid": 250.0},
                                            {"step": 6, "kimg": 0.096, "fid": 180.5}])  # fmt: skip
    cut_last_line(run_dir / "metrics.jsonl")
    cut_last_line(run_dir / "train_log.jsonl")
    out = tmp_path / "report.html"
    proc = run([PYTHON, "-m", "gan.report", run_dir, "--out", out], check=True)
    assert "250.00 (step 3)" in out.read_text()
    assert f"{run_dir / 'metrics.jsonl'}: skipped line 2" in proc.stderr
    assert f"{run_dir / 'train_log.jsonl'}: skipped line" in proc.stderr

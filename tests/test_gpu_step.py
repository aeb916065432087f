"""bench/gpu_step.py's reading of a profiler trace, on a trace written here with known intervals."""

import json

from bench.gpu_step import Cell, busy_share, parse_cell, table


def opt_step(end_us: float) -> dict:
    return {"name": "Optimizer.step#Adam.step", "cat": "user_annotation", "ts": end_us - 5, "dur": 5}


def test_busy_share_is_the_union_of_gpu_intervals_over_the_steady_steps(tmp_path):
    # 12 optimizer steps ending every 100 us; with n_critic = 1 the steady window runs from the end of the
    # 4th (index 3: 400 us) to the end of the last (1200 us): 800 us holding 4 G steps.
    events = [opt_step(100 * (i + 1)) for i in range(12)]
    events += [
        {"name": "k0", "cat": "kernel", "ts": 350, "dur": 100},  # clipped to 400-450: 50
        {"name": "k1", "cat": "kernel", "ts": 500, "dur": 100},  # 500-600: 100
        {"name": "k2", "cat": "kernel", "ts": 550, "dur": 100},  # overlaps k1: adds 600-650, 50
        {"name": "m", "cat": "gpu_memcpy", "ts": 700, "dur": 20},  # 20
        {"name": "s", "cat": "gpu_memset", "ts": 1190, "dur": 50},  # clipped to 1190-1200: 10
        {"name": "cpu", "cat": "cpu_op", "ts": 800, "dur": 300},  # host work: not GPU time
    ]
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": events}))
    got = busy_share(trace, n_critic=1)
    assert abs(got["gpu_busy"] - 230 / 800) < 1e-12
    assert abs(got["host_share"] - 570 / 800) < 1e-12
    assert abs(got["gpu_ms_per_g_step"] - 0.230 / 4) < 1e-12
    assert abs(got["profiled_ms_per_g_step"] - 0.800 / 4) < 1e-12
    assert got["gpu_events_per_g_step"] == 4 / 4  # k1, k2, m, s start inside the window


def test_a_trace_without_gpu_events_is_reported_not_divided(tmp_path):
    trace = tmp_path / "trace.json"
    trace.write_text(json.dumps({"traceEvents": [opt_step(100 * (i + 1)) for i in range(12)]}))
    assert busy_share(trace, n_critic=1) == {"profile_error": "12 optimizer steps and 0 GPU events in the trace"}


def test_cells_parse_and_tabulate():
    cell = parse_cell("before:sngan_cifar10:256:bf16:none:profile")
    assert cell == Cell("before", "sngan_cifar10", 256, "bf16", "none", True)
    rows = table({"cells": [
        {**vars(Cell("after", "dcgan_cifar10", 64, "bf16", "reduce-overhead")), "steady_img_per_s": 9787.2,
         "mfu_measured_peak": 0.005},
        {**vars(cell), "gpu_busy": 0.201, "gpu_ms_per_g_step": 1.21},
        {**vars(Cell("after", "dcgan_cifar10", 64, "bf16", "default")), "error": "exit code 1: boom"},
    ]}).splitlines()  # fmt: skip
    assert rows[2] == "| dcgan_cifar10 | 64 | bf16 | after | default | failed: exit code 1: boom | | | |"
    assert rows[3] == "| dcgan_cifar10 | 64 | bf16 | after | reduce-overhead | 9,787 | 0.5% | | |"
    assert rows[4] == "| sngan_cifar10 | 256 | bf16 | before | none | (profiled) | | 20.1% | 1.21 |"

"""python -m lr_jax.benchmark: figures for every model/mode asked, the XLA path, and a trace with --profile."""

import gzip

import jax

from lr_jax import benchmark, xla_cpu


def test_benchmark_runs_the_steps_it_reports_on_all_devices():
    result = benchmark.benchmark("tiny_cnn", batch_size=16, steps=12, image_size=8, label_mode="online")
    assert result["devices"] == jax.local_device_count() == 4
    assert result["train_steps_run"] == 12 + 1  # the timed steps after one untimed warm-up step, state threaded
    assert result["label_mode"] == "online" and result["steps"] == 12
    assert result["train_images_per_second"] > 0 and result["predict_images_per_second"] > 0


def test_main_prints_the_xla_path_and_writes_a_trace_of_the_train_steps(tmp_path, capsys):
    benchmark.main(["--models", "tiny_cnn", "--batch_size", "16", "--steps", "2", "--profile", str(tmp_path)])
    printed = capsys.readouterr().out
    assert f"XLA:CPU path: {xla_cpu.path()}" in printed
    assert "tiny_cnn batch 16" in printed and "train steps/s" in printed and "(2 steps," in printed
    assert list(tmp_path.rglob("*.xplane.pb"))
    [trace] = tmp_path.rglob("perfetto_trace.json.gz")
    events = gzip.open(trace).read().decode()
    assert "loop.py" in events and " run_steps" in events  # the loop's own step runner, as training runs it

"""Interruptions of real CLI runs: SIGTERM/SIGINT stop cleanly and the rerun resumes to the uninterrupted result,
a second signal ends the run at once, one run per workdir (a lock that dies with its process), full disks."""

import errno
import json
import os
import signal
import socket
import subprocess
import time

import pytest

from cli_runs import REPO_ROOT, STEPS_PER_GENERATION, cli_command, run_cli, subprocess_env
from test_resume import assert_same_result, flags, images, reference, training_steps  # noqa: F401 (fixtures)
from lr_jax import files, interrupt

STOPPED = interrupt.EXIT_STATUS


class Started:
    """A CLI run in the background whose output goes to files; `finish()` waits for it and reads them."""

    def __init__(self, args, at_call, action, folder):
        self.out, self.err = folder / "stdout.txt", folder / "stderr.txt"
        with open(self.out, "w") as out, open(self.err, "w") as err:
            self.process = subprocess.Popen(cli_command(args, at_call, action), env=subprocess_env(),
                                            cwd=REPO_ROOT, stdout=out, stderr=err)

    def wait_for(self, marker, timeout=120):
        """Waits until the step hook wrote `marker` (the run is then held just before that step)."""
        deadline = time.time() + timeout
        while not marker.exists():
            assert self.process.poll() is None, self.err.read_text()[-3000:]
            assert time.time() < deadline, f"no {marker} after {timeout} s"
            time.sleep(0.05)

    def wait_for_text(self, text, timeout=60):
        deadline = time.time() + timeout
        while text not in self.err.read_text():
            assert time.time() < deadline, f"{text!r} not on stderr after {timeout} s"
            time.sleep(0.05)

    def finish(self, timeout=120):
        try:
            code = self.process.wait(timeout=timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        return code, self.out.read_text(), self.err.read_text()


def stop_line(reason, generation, step, workdir, finished):
    return (f"stopped by {reason} in generation {generation} at step {step} of {STEPS_PER_GENERATION}; its training "
            f"state is saved in {workdir}/checkpoints/training/generation_{generation}/{step}; {finished} "
            f"generation{'s' * (finished != 1)} finished. Run the same command again to resume (exit status "
            f"{STOPPED})")


def signalled_run(images, workdir, tmp_path, at_call, signum, name):
    """A run held before its `at_call`th step, sent `signum` from here; returns (exit status, stdout, stderr)."""
    folder = tmp_path / name
    folder.mkdir()
    marker = folder / "held"
    run = Started(flags(images, workdir), at_call, f"pause:{marker}", folder)
    run.wait_for(marker)
    run.process.send_signal(signum)
    return run.finish()


def test_sigint_then_sigterm_stop_cleanly_and_the_rerun_equals_the_uninterrupted_run(images, reference, tmp_path):
    workdir = tmp_path / "workdir"
    # Ctrl-C before generation 1's 4th step: that step is finished and saved, then the run stops.
    code, out, err = signalled_run(images, workdir, tmp_path, 4, signal.SIGINT, "first")
    assert code == STOPPED, err[-3000:]
    assert "SIGINT received: finishing the current step, saving a checkpoint and stopping" in err
    assert err.strip().splitlines()[-1] == stop_line("SIGINT", 1, 4, workdir, 0)
    assert "Traceback" not in err
    assert training_steps(workdir, 1) == [3, 4]
    assert not (workdir / "results.json").exists()  # no generation had finished
    assert stop_line("SIGINT", 1, 4, workdir, 0) in (workdir / "log.txt").read_text()
    assert not (workdir / "run.lock").exists()

    # Resumed, then SIGTERM (a preemption notice) before generation 2's 8th step (6 steps of generation 1 first).
    code, out, err = signalled_run(images, workdir, tmp_path, 6 + 8, signal.SIGTERM, "second")
    assert code == STOPPED, err[-3000:]
    assert f"resuming from the checkpoint at step 4 of {STEPS_PER_GENERATION}" in out
    assert err.strip().splitlines()[-1] == stop_line("SIGTERM", 2, 8, workdir, 1)
    assert training_steps(workdir, 2) == [6, 8]
    stopped = json.loads((workdir / "results.json").read_text())
    assert not stopped["complete"] and [g["generation"] for g in stopped["generations"]] == [1]

    done = run_cli(flags(images, workdir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generation 1/2: reloaded" in done.stdout
    assert f"resuming from the checkpoint at step 8 of {STEPS_PER_GENERATION}" in done.stdout
    assert_same_result(workdir, reference)
    resumed = json.loads((workdir / "results.json").read_text())
    # The interrupted invocations' time is counted up to the stop (results.json was rewritten when it stopped).
    assert resumed["wall_seconds"] == pytest.approx(stopped["wall_seconds"] + resumed["session_wall_seconds"])


def test_a_second_signal_ends_the_run_at_once_without_saving(images, tmp_path):
    workdir, marker = tmp_path / "workdir", tmp_path / "held"
    run = Started(flags(images, workdir), 2, f"hold:{marker}", tmp_path)  # never lets step 2 run
    run.wait_for(marker)
    run.process.send_signal(signal.SIGTERM)
    run.wait_for_text("SIGTERM received")
    run.process.send_signal(signal.SIGINT)
    code, _, err = run.finish(timeout=60)
    assert code == -signal.SIGINT, err[-3000:]
    assert training_steps(workdir, 1) == []  # the first checkpoint (step 3) was never reached


def snapshot(workdir):
    """Every file under `workdir` with its bytes."""
    return {str(p.relative_to(workdir)): p.read_bytes() for p in sorted(workdir.rglob("*")) if p.is_file()}


def test_a_second_run_on_the_workdir_is_refused_and_the_lock_dies_with_the_first(images, reference, tmp_path):
    workdir, marker = tmp_path / "workdir", tmp_path / "held"
    first = Started(flags(images, workdir), 5, f"hold:{marker}", tmp_path)  # holds the workdir, step 3 saved
    try:
        first.wait_for(marker)
        before = snapshot(workdir)
        for extra in ((), ("--overwrite", "--epochs", "1")):
            second = run_cli(flags(images, workdir, *extra))
            assert second.returncode == 2, second.stderr[-3000:]
            assert (f"error: --workdir {workdir} is in use by another run: process {first.process.pid} on host "
                    f"{socket.gethostname()}") in second.stderr
            assert "Traceback" not in second.stderr
            assert "train images per class" not in second.stdout  # refused before the data were read
            assert snapshot(workdir) == before  # nothing written, nothing removed by --overwrite
    finally:
        first.process.kill()  # SIGKILL: the lock must not outlive the process
    code, _, _ = first.finish()
    assert code == -signal.SIGKILL
    assert (workdir / "run.lock").exists()  # the file stays behind, its lock does not
    done = run_cli(flags(images, workdir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from the checkpoint at step 3 of {STEPS_PER_GENERATION}" in done.stdout
    assert_same_result(workdir, reference)
    assert not (workdir / "run.lock").exists()


def assert_write_failure_kept_the_run(done, workdir, reason):
    """A checkpoint write of generation 2 failed at step 5: one clear line, step 3 and results.json kept."""
    assert done.returncode == 74, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    line = next(line for line in done.stderr.splitlines() if line.startswith("error: "))
    assert line == (f"error: cannot write the checkpoint {workdir}/checkpoints/training/generation_2/5: {reason}; "
                    f"the newest step kept there is 3. Free some space (or fix the file system) and rerun the same "
                    f"command: it resumes from what was kept")
    assert sorted(p.name for p in (workdir / "checkpoints" / "training" / "generation_2").iterdir()) == ["3"]
    kept = json.loads((workdir / "results.json").read_text())
    assert [g["generation"] for g in kept["generations"]] == [1] and not kept["complete"]


def test_a_failed_checkpoint_write_is_a_clear_error_and_the_rerun_resumes(images, reference, tmp_path):
    workdir = tmp_path / "workdir"
    # From generation 2's 4th step on, every write that extends a file fails (EFBIG); the next save is at step 5.
    done = run_cli(flags(images, workdir), at_call=STEPS_PER_GENERATION + 4, action="no_space")
    assert_write_failure_kept_the_run(done, workdir, f"File too large (errno {errno.EFBIG})")
    done = run_cli(flags(images, workdir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from the checkpoint at step 3 of {STEPS_PER_GENERATION}" in done.stdout
    assert_same_result(workdir, reference)


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 16 MiB tmpfs (a file system that can really fill up); skips where mounting is not allowed."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_a_full_disk_during_a_checkpoint_and_the_rerun_after_freeing_space(images, reference, small_tmpfs):
    workdir, filler = small_tmpfs / "workdir", small_tmpfs / "filler"
    done = run_cli(flags(images, workdir), at_call=STEPS_PER_GENERATION + 4, action=f"fill:{filler}")
    assert_write_failure_kept_the_run(done, workdir, f"No space left on device (errno {errno.ENOSPC})")
    filler.unlink()
    done = run_cli(flags(images, workdir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming from the checkpoint at step 3 of {STEPS_PER_GENERATION}" in done.stdout
    assert_same_result(workdir, reference)


def test_a_failed_results_write_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    files.write_json_atomic(str(path), {"generations": [1]})

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(files.WriteError) as failure:
        files.write_json_atomic(str(path), {"generations": [1, 2]})
    assert str(failure.value) == (f"cannot write {path}: No space left on device (errno {errno.ENOSPC}); the "
                                  f"previous file is kept")
    assert json.loads(path.read_text()) == {"generations": [1]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary file left


def test_signal_handlers_are_installed_only_within_and_restored():
    def previous(signum, frame):
        raise AssertionError("the previous handler was called")

    old_term = signal.signal(signal.SIGTERM, previous)
    try:
        old_int = signal.getsignal(signal.SIGINT)
        with interrupt.stop_on_signals():
            assert signal.getsignal(signal.SIGTERM) is not previous
            assert interrupt.requested() is None and not interrupt.should_stop()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)  # Python runs the handler between bytecodes
            assert interrupt.requested() == "SIGTERM" and interrupt.should_stop()
            # A second signal now takes the default action (ends the process at once).
            assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGTERM) is previous and signal.getsignal(signal.SIGINT) is old_int
        assert interrupt.requested() is None
    finally:
        signal.signal(signal.SIGTERM, old_term)


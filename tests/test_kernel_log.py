"""reproduce's log without the kernels' harmless messages, with every real kernel error still shown."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

from kdrepro.kernel_log import _copy_filtered, is_harmless

TCP = ("[IPKernelApp] WARNING | Kernel is running over TCP without encryption. All communication (including code "
       "and outputs) is sent in plain text and is susceptible to eavesdropping.")
KI = "[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel."


def test_only_the_two_known_messages_are_harmless():
    assert is_harmless(TCP) and is_harmless(KI) and is_harmless("KeyboardInterrupt caught in kernel")
    for line in ("Traceback (most recent call last):", "[IPKernelApp] ERROR | Exception in message handler:",
                 "KeyboardInterrupt", "Kernel died", "RuntimeError: CUDA out of memory"):
        assert not is_harmless(line), line


def test_the_filter_copies_every_other_byte_in_order():
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    reader = threading.Thread(target=_copy_filtered, args=(r1, w2))
    reader.start()
    for piece in (f"{TCP}\nfirst real line\n{KI}\nsecond ".encode(), b"half\n", b"no newline at the end"):
        os.write(w1, piece)
    os.close(w1)
    reader.join(5)
    os.close(w2)
    with os.fdopen(r2, "rb") as f:
        assert f.read() == b"first real line\nsecond half\nno newline at the end"


def _stderr_of(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300)


def test_child_processes_are_filtered_and_this_process_writes_directly():
    out = _stderr_of(f"""
        import subprocess, sys
        from kdrepro.kernel_log import quiet_kernel_noise
        with quiet_kernel_noise():
            print("parent line", file=sys.stderr)
            subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write({TCP!r} + '\\\\nTraceback: a real kernel error\\\\n' + {KI!r} + '\\\\n')"])
        print("after", file=sys.stderr)
        """)
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == ["parent line", "Traceback: a real kernel error", "after"]


def test_after_an_interrupt_an_orphaned_failed_task_is_not_reported_after_the_last_line():
    """After Ctrl-C, nbclient's cell task (failed with the dead kernel, never awaited) is garbage-collected late;
    asyncio would then log "Task exception was never retrieved" after reproduce's last line. Without the
    interrupt the same orphaned task is still reported (the logger is silenced only by an interrupt)."""
    script = """
        import asyncio, gc, sys
        from kdrepro.kernel_log import quiet_kernel_noise
        async def cell():
            raise RuntimeError("Kernel died")
        def orphan():
            loop = asyncio.new_event_loop()
            task = loop.create_task(cell())
            loop.run_until_complete(asyncio.sleep(0.01))
            loop.close()
            return task
        task = orphan()
        try:
            with quiet_kernel_noise():
                {body}
        except KeyboardInterrupt:
            pass
        print("last line", file=sys.stderr)
        del task
        gc.collect()
        """
    interrupted = _stderr_of(script.format(body="raise KeyboardInterrupt"))
    assert interrupted.returncode == 0, interrupted.stderr
    assert interrupted.stderr.strip().splitlines()[-1] == "last line", interrupted.stderr
    quiet = _stderr_of(script.format(body="pass"))
    assert "Task exception was never retrieved" in quiet.stderr, quiet.stderr


def test_a_real_kernel_quiet_on_success_and_its_errors_still_show(tmp_path):
    """A real notebook through papermill: no TCP warning in the log; what the kernel itself writes to its
    standard error shows; a failing cell is reported by name and cell."""
    import nbformat

    for name, source in (("ok", "import os\nos.write(2, b'a real kernel message\\n')\nprint(1)"),
                         ("bad", "raise ValueError('a real cell error')")):
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / f"{name}.ipynb")
    out = _stderr_of(f"""
        from pathlib import Path
        from kdrepro.reproduce import ReproduceError, run_notebook
        t = Path({str(tmp_path)!r})
        run_notebook(t / "ok.ipynb", t / "out", {{}}, t / "failed")
        try:
            run_notebook(t / "bad.ipynb", t / "out", {{}}, t / "failed")
        except ReproduceError as err:
            print("reported:", err)
        """)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "without encryption" not in out.stderr
    assert "a real kernel message" in out.stderr
    assert "reported: notebook bad.ipynb failed in cell [1] (ValueError: a real cell error)" in out.stdout


def test_ctrl_c_of_reproduce_ends_on_one_line_and_leaves_nothing_behind(tmp_path):
    """Ctrl-C while a notebook trains (SIGINT to reproduce's process group, as a terminal sends it): exit 130,
    the one 'interrupted' line and no kernel traceback of its torn-down sockets, no .running.ipynb, no lock."""
    import glob
    import signal
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-m", "kdrepro.reproduce", "--profile", "demo", "--notebook", "03",
                             "--results", str(results)], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            # a shell's background job (CI may be one) ignores SIGINT, and a Python started with
                            # SIGINT ignored never turns Ctrl-C into KeyboardInterrupt: give reproduce a terminal's
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not list((results / "runs").glob("*.lock")) and time.monotonic() < deadline:
            time.sleep(0.5)  # a run of the notebook is training
        assert list((results / "runs").glob("*.lock")), "the notebook never started training"
        time.sleep(3)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("kdrepro.reproduce: interrupted"), err
    assert "Traceback" not in err and "IPKernelApp" not in err, err
    assert not glob.glob(str(results / "demo" / "notebooks" / ".*.running.ipynb"))
    assert not list((results / "runs").glob("*.lock"))

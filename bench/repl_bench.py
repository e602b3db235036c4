"""How fast the REPL shows its prompt, and how fast completion answers with 1,000 boxes.

    .venv/bin/python bench/repl_bench.py

Prompt: `cloudsh --sandbox repl` on a pseudo-terminal, from exec to the prompt, against
a bare prompt_toolkit prompt measured in the same run (a private sandbox in a temp dir
is started first and stopped at the end). Completion: `complete()` and the
prompt_toolkit adapter over an index of 1,000 instances (names and ids), against
prompt_toolkit's own WordCompleter over the same words. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import report

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BARE_PROMPT = "from prompt_toolkit import PromptSession\nPromptSession().prompt('cloudsh> ')\n"


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CLOUDSH_"))}
    env.update(
        HOME=str(tmp / "home"), XDG_STATE_HOME=str(tmp / "state"), XDG_CONFIG_HOME=str(tmp / "config"),
        XDG_CACHE_HOME=str(tmp / "cache"), CLOUDSH_SANDBOX_DIR=str(tmp / "sandbox"), CLOUDSH_SANDBOX="1",
        CLOUDSH_SANDBOX_BOOT_S="0.3", AWS_EC2_METADATA_DISABLED="true", TERM="xterm", PROMPT_TOOLKIT_NO_CPR="1",
    )
    return env


def time_to_prompt(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    import pexpect

    times = []
    for _ in range(runs):
        start = time.perf_counter()
        child = pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8", dimensions=(30, 120), timeout=30)
        child.expect_exact("cloudsh>")
        times.append(time.perf_counter() - start)
        child.sendeof()
        child.expect(pexpect.EOF)
        child.close(force=True)
    return times


def per_call(fn: Callable[[], object], runs: int) -> list[float]:
    fn()
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def ms(values: list[float]) -> str:
    values = sorted(values)
    p95 = values[int(len(values) * 0.95) - 1]
    return f"median {statistics.median(values) * 1000:7.2f} ms   p95 {p95 * 1000:7.2f} ms"


def bench_completion() -> None:
    from prompt_toolkit.completion import CompleteEvent, WordCompleter
    from prompt_toolkit.document import Document

    from cloudsh.commands.complete import CompletionIndex, complete
    from cloudsh.repl import IndexCompleter

    names = [f"box-{i:04d}" for i in range(1000)]
    ids = [f"i-{i:017x}" for i in range(1000)]
    index = CompletionIndex(
        instances=tuple(names + ids),
        types=tuple(f"{f}.{s}" for f in ("t3", "m5", "c5", "g5", "g6", "p4d", "p5") for s in ("large", "xlarge", "2xlarge", "4xlarge")),
        details={n: f"{i} running g5.xlarge" for n, i in zip(names, ids, strict=True)},
    )
    adapter = IndexCompleter(lambda: index)
    peer = WordCompleter(names + ids)
    event = CompleteEvent(completion_requested=True)
    print("completion, 1,000 instances (2,000 names and ids) in the index:")
    for line in ("run ", "run box-05", "stop box-0001 box-9", "launch x --type g", "ru"):
        got = len(complete(line, None, index))
        print(f"  complete({line!r:24}) {got:5d} results  {ms(per_call(lambda line=line: complete(line, None, index), 200))}")
    doc = Document("run box-05")
    ours = per_call(lambda: list(adapter.get_completions(doc, event)), 200)
    theirs = per_call(lambda: list(peer.get_completions(Document("box-05"), event)), 200)
    print(f"  prompt_toolkit adapter, 'run box-05'      {ms(ours)}")
    print(f"  peer: WordCompleter over the same words   {ms(theirs)}")
    print(f"  ratio adapter / WordCompleter: {statistics.median(ours) / statistics.median(theirs):.2f}")
    FIGURES["completion_ratio_vs_wordcompleter"] = statistics.median(ours) / statistics.median(theirs)
    doc = Document("run ")
    every = per_call(lambda: list(adapter.get_completions(doc, event)), 50)
    print(f"  prompt_toolkit adapter, all 2,000 ('run ') {ms(every)}")


def bench_prompt(runs: int = 5) -> None:
    with tempfile.TemporaryDirectory(prefix="cloudsh-bench-") as d:
        tmp = Path(d)
        (tmp / "home").mkdir()
        env = _env(tmp)
        py = sys.executable
        subprocess.run([py, "-m", "cloudsh", "sandbox", "up"], env=env, cwd=ROOT, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            ours: list[float] = []
            bare: list[float] = []
            for _ in range(runs):  # in turns, so a busy moment of the machine hits both
                ours += time_to_prompt([py, "-m", "cloudsh", "repl"], env, 1)
                bare += time_to_prompt([py, "-c", BARE_PROMPT], env, 1)
        finally:
            subprocess.run([py, "-m", "cloudsh", "sandbox", "down"], env=env, cwd=ROOT,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"prompt shown ({runs} runs, sandbox):")
    print(f"  cloudsh --sandbox repl          {ms(ours)}")
    print(f"  peer: bare prompt_toolkit prompt {ms(bare)}")
    print(f"  ratio: {statistics.median(ours) / statistics.median(bare):.2f}")
    FIGURES["prompt_ratio_vs_bare_prompt_toolkit"] = statistics.median(ours) / statistics.median(bare)


#: The ratios this bench measured, for bench/out/.
FIGURES: dict[str, float] = {}


def main() -> None:
    os.chdir(ROOT)
    print("== REPL")
    bench_completion()
    bench_prompt()
    report("REPL", [(k, f"{v:.2f}") for k, v in FIGURES.items()], FIGURES)


if __name__ == "__main__":
    main()

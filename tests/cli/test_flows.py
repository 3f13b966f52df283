"""Host flows over real SSH: `where` filters, `gather` barriers and rolling `batch`es."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tests.conftest import SshSetup


def shared_dir() -> Path:
    d = Path(tempfile.mkdtemp(prefix="dsh-flows-"))
    d.chmod(0o777)  # the test user writes here
    return d


def results(stdout: str) -> dict[str, dict[str, object]]:
    events = [json.loads(line) for line in stdout.splitlines()]
    return {str(e["host"]): e for e in events if e["event"] == "result"}


def test_where_lets_only_the_failed_host_go_on(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "-c", "@h[1-4] test $host != h2 | where failed | echo fix $host"])
    assert r.returncode == 0, r.stderr  # the failure it let through is consumed
    assert [line for line in r.stdout.splitlines() if " | " in line] == ["h2 | fix h2"]


def test_where_on_output_and_a_failure_it_does_not_let_through(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "-c", "@h[1-3] echo v$host | where out ~ 'vh[12]' | echo picked $host"])
    assert r.returncode == 0, r.stderr
    assert sorted(line for line in r.stdout.splitlines() if " | picked" in line) == [
        "h1 | picked h1",
        "h2 | picked h2",
    ]
    r = run_dsh([*ssh_setup.args(), "--json", "-c", "@h[1-2] test $host = h1 | where ok | echo on $host"])
    assert r.returncode == 1  # h2 failed and no where let it through
    assert {h: e["outcome"] for h, e in results(r.stdout).items()} == {"h1": "ok", "h2": "failed"}


def test_gather_waits_for_every_host(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    log = shared_dir() / "order"
    text = (
        f"@h[1-3] sh -c 'test $0 = h1 && sleep 1; echo a $0 >> {log}' $host | gather | "
        f"sh -c 'echo b $0 >> {log}' $host"
    )
    r = run_dsh([*ssh_setup.args(), "-c", text])
    assert r.returncode == 0, r.stderr
    kinds = [line.split()[0] for line in log.read_text().splitlines()]
    assert kinds == ["a", "a", "a", "b", "b", "b"], log.read_text()


def test_a_flow_that_fails_before_gather_does_not_hold_the_others(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "--json", "-c", "@h[1-3] test $host != h2 | gather | echo past $host"])
    assert r.returncode == 1
    outcomes = {h: e["outcome"] for h, e in results(r.stdout).items()}
    assert outcomes == {"h1": "ok", "h2": "failed", "h3": "ok"}


def test_batch_stops_the_roll_after_max_fail(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    marks = shared_dir()
    text = (
        f"@h[1-6] sh -c 'echo ran > {marks}/$0; test $0 != h3 -a $0 != h4' $host "
        "| within 30s | batch 2 max-fail 1"
    )
    r = run_dsh([*ssh_setup.args(), "--session", "roll", "--json", "-c", text])
    assert r.returncode == 1
    outcomes = {h: e["outcome"] for h, e in results(r.stdout).items()}
    assert outcomes == {
        "h1": "ok",
        "h2": "ok",
        "h3": "failed",
        "h4": "failed",
        "h5": "skipped",
        "h6": "skipped",
    }
    assert sorted(p.name for p in marks.iterdir()) == ["h1", "h2", "h3", "h4"]  # h5, h6 never started
    r = run_dsh(
        [*ssh_setup.args(), "--session", "roll", "-c", "@{skipped} echo later $host"]
    )  # the skipped are a result set
    assert sorted(line for line in r.stdout.splitlines() if " | " in line) == [
        "h5 | later h5",
        "h6 | later h6",
    ]


def test_batch_in_percent_and_explain(run_dsh) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh(["explain", "@h[1-8] true | within 10s | batch 25%"])
    assert r.returncode == 0, r.stderr
    assert "batch    25% hosts at a time" in r.stdout
    assert "(10s + 5s) * 4 batches" in r.stdout  # 2 hosts a batch: 4 batches of 10 s and a stop each


def test_flow_stages_are_checked_at_compile_time(run_dsh) -> None:  # type: ignore[no-untyped-def]
    cases = {
        "where failed": "must follow a stage",
        "true | where bogus": "is not an outcome",
        "true | where out ~ '('": "bad regular expression",
        "@h1 true | batch 0": "needs how many hosts",
        "@h1 true | batch 2 | batch 3": "has a 'batch' already",
        "true | batch 2": "this line has none",
        "@h1 true | batch 2 max-fail x": "needs a whole number",
        "@h1 true | gather | retry 2": "applies to a command",
    }
    for text, message in cases.items():
        r = run_dsh(["-c", text])
        assert r.returncode == 2 and message in r.stderr, (text, r.stderr)


def test_gather_folds_identical_outputs_instead_of_streaming_them(run_dsh, ssh_setup: SshSetup) -> None:  # type: ignore[no-untyped-def]
    r = run_dsh([*ssh_setup.args(), "-c", "@h[1-4] true | gather | echo same"])
    assert r.returncode == 0, r.stderr
    assert " | same" not in r.stdout  # not line by line
    assert "h[1-4] (4)  ok" in r.stdout and "  same" in r.stdout  # once, folded
    r = run_dsh([*ssh_setup.args(), "-c", "@h[1-2] echo streamed"])
    assert "h1 | streamed" in r.stdout  # without gather, lines stream as they come

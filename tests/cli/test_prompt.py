"""The plain `dsh>` prompt in a real terminal (pexpect): lines, bindings, continuation."""

from __future__ import annotations

from tests.helpers.prompt import end, spawn


def test_prompt_runs_lines_keeps_bindings_and_survives_errors(env) -> None:  # type: ignore[no-untyped-def]
    child = spawn(env)
    try:
        child.expect("dsh>")
        child.sendline("x = 41")
        child.expect("dsh>")
        child.sendline("echo $((x + 1))")
        child.expect("dsh>")
        child.sendline("echo $x |")
        child.expect(r"\.\.\.")
        child.sendline("tr 1 2")
        child.expect("42")
        child.expect("dsh>")
        child.sendline("true | within 5")
        child.expect("not a duration")  # marked as typed: the text stays to be fixed
        child.sendintr()  # Ctrl-C drops it
        child.expect("dsh>")
        child.sendline("false")
        child.expect("failed")
        child.expect("dsh>")
        child.sendline("echo still-here")
        child.expect("still-here")
        child.expect("dsh>")
        end(child)
    finally:
        child.close()
    assert child.exitstatus == 0  # like sh: the status of the last line


def test_ctrl_c_cancels_the_running_line(env) -> None:  # type: ignore[no-untyped-def]
    child = spawn(env)
    try:
        child.expect("dsh>")
        child.sendline("command sleep 30")
        child.expect(r"\r\n")
        import time

        time.sleep(0.5)
        child.sendintr()
        child.expect("cancelled")
        child.expect("dsh>")
        child.sendline("echo after")
        child.expect("after")
        child.expect("dsh>")
        end(child)
    finally:
        child.close()


def test_empty_lines_do_not_reset_the_status(env) -> None:  # type: ignore[no-untyped-def]
    child = spawn(env)
    try:
        child.expect("dsh>")
        child.sendline("false")
        child.expect("failed")
        child.expect("dsh>")
        child.sendline("")
        child.expect("dsh>")
        child.sendline("# a comment")
        child.expect("dsh>")
        end(child)
    finally:
        child.close()
    assert child.exitstatus == 1


def test_prompt_claims_the_session_again_after_an_idle_pause(env) -> None:  # type: ignore[no-untyped-def]
    import time

    env = {**env, "DSH_LEASE_TTL": "0.6", "DSH_SESSION": "idle-prompt"}
    child = spawn(env)
    try:
        child.expect("dsh>")
        child.sendline("x = 41")
        child.expect("dsh>")
        time.sleep(1.5)  # the lease runs out while nobody types
        child.sendline("echo x=$x")
        child.expect("x=41")
        child.expect("dsh>")
        end(child)
    finally:
        child.close()
    assert child.exitstatus == 0


def test_an_unclosed_brace_continues_and_functions_stay_known(env) -> None:  # type: ignore[no-untyped-def]
    child = spawn(env)
    try:
        child.expect("dsh>")
        child.sendline("if true {")
        child.expect(r"\.\.\.")
        child.sendline("echo in''side")
        child.expect(r"\.\.\.")
        child.sendline("}")
        child.expect("inside")
        child.expect("dsh>")
        child.sendline("fn hi(who) { echo hi-$who }")
        child.expect("dsh>")
        child.sendline("hi there")
        child.expect("hi-there")
        child.expect("dsh>")
        end(child)
    finally:
        child.close()
    assert child.exitstatus == 0

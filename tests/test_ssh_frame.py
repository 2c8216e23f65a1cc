"""The wire between runner and agent, without any sshd: frames, markers, lines, targets."""

from __future__ import annotations

import base64

import pytest

from installers.ssh import FINGERPRINT, SSHTarget, build_frame, exec_command, kept_parts
from installers.ssh.frame import MARK, READY_LINE, JobStream, Lines
from tests.support.ssh_jobs import job


def test_frame_rejects_bad_names():
    with pytest.raises(ValueError, match=r"env: 'BAD-NAME'"):
        build_frame(job("true", env={"BAD-NAME": "x"}))
    with pytest.raises(ValueError, match=r"files: '../x'"):
        build_frame(job("true", files={"../x": "x"}))
    with pytest.raises(ValueError, match="KAI_WORK"):
        build_frame(job("true", env={"KAI_WORK": "/"}))


@pytest.mark.parametrize("where", ["env", "files"])
def test_a_trailing_newline_never_passes_a_name_check(where):
    # `$` matches before a final newline: a name "X\n" would split a part header in two
    bad = {"env": dict(env={"KAI_X\n": "v"}), "files": dict(files={"f.conf\n": "v"})}[where]
    with pytest.raises(ValueError, match=where):
        build_frame(job("true", **bad))


def test_frame_layout_and_what_a_ready_agent_is_not_sent_again():
    j = job("echo hi", env={"KAI_A": "it's $(x)"}, secret_env={"KAI_T": "tok"},
            files={"a.conf": b"\x00bin"})
    frame = build_frame(j)
    assert frame.startswith(b"KAI-PART env ")
    env = frame.split(b"\n", 1)[1]
    assert b"KAI_STEP=test-step\n" in env and b"KAI_A='it'\"'\"'s $(x)'\n" in env
    assert b"KAI-PART lib.sh " in frame and b"KAI-PART step.sh " in frame
    assert b"KAI-PART files/a.conf 4\n\x00bin" in frame
    assert frame.endswith(b"KAI-RUN step.sh\n")
    again = build_frame(j, kept_parts(j))
    assert b"KAI-PART lib.sh" not in again and b"KAI-PART step.sh" not in again
    assert again.endswith(b"KAI-RUN step.sh\n")


def test_the_command_line_is_constant_and_holds_nothing_of_the_job():
    assert exec_command("none") == exec_command("none")
    assert exec_command("nopasswd").startswith("sudo -n -- bash -c ")
    assert "test-step" not in exec_command("password")


def test_job_stream_strips_markers_and_reads_outputs():
    lines = []
    s = JobStream(lines.append)
    for line in ["\x1ekai-start", "hello",
                 f"\x1ekai-out r.txt {base64.b64encode(b'42').decode()}", "\x1ekai-exit 3"]:
        s.stdout_line(line)
    assert lines == ["hello"] and s.started and s.exit_code == 3
    assert s.outputs == {"r.txt": b"42"} and not s.bad_markers


def test_readiness_inside_a_job_is_a_protocol_error():
    s = JobStream(None)
    s.stdout_line(READY_LINE)
    s.stdout_line(MARK + "kai-out x not-base64!")
    assert s.bad_markers == 2


def test_lines_split_across_reads():
    lines = Lines()
    assert lines.feed(b"a\nb") == ["a"]
    assert lines.feed(b"c\r\nd") == ["bc"]
    assert lines.flush() == ["d"] and lines.flush() == []


@pytest.mark.parametrize("fp", ["MD5:aa:bb", "SHA256:" + "A" * 43 + "=", "SHA256:" + "A" * 43 + "\n"])
def test_bad_fingerprint_format_names_the_field(fp):
    with pytest.raises(ValueError, match="host_key_fingerprints"):
        SSHTarget(node="n", host="127.0.0.1", host_key_fingerprints=(fp,))
    assert FINGERPRINT.fullmatch("SHA256:" + "A" * 43)

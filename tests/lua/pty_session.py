#!/usr/bin/env python3
"""Drives a command through a pseudo-terminal, for the tests of what only a
terminal shows: completion, history, progress lines and Ctrl-C.

usage: pty_session.py COMMAND ACTION...
  send:TEXT     type TEXT (Python escapes: \\n, \\t, \\x03 for Ctrl-C, \\x04 for Ctrl-D)
  wait:REGEX    wait until everything printed so far matches REGEX (re.S),
                searching only what came after the previous wait's match
  sleep:SECS    pause
At the end the terminal is closed once the command has ended (10 s at most,
then it is killed). Everything the command printed (stdout and stderr, as a
terminal shows them: \\r\\n line ends, escape sequences kept) goes to stdout;
the exit status is the command's (124 when a wait timed out or it hung).
"""
import os
import pty
import re
import select
import signal
import sys
import time

TIMEOUT = 10.0


def main():
    command, actions = sys.argv[1], sys.argv[2:]
    pid, fd = pty.fork()
    if pid == 0:  # the child: a shell runs the command on the terminal
        os.execvp("sh", ["sh", "-c", command])
    out = bytearray()
    mark = 0  # where the next wait starts searching
    failed = False

    def read_some(deadline):
        r, _, _ = select.select([fd], [], [], max(0.0, min(0.05, deadline - time.time())))
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                return False
            if not data:
                return False
            out.extend(data)
        return True

    for action in actions:
        kind, _, arg = action.partition(":")
        if kind == "send":
            os.write(fd, arg.encode().decode("unicode_escape").encode("latin-1"))
        elif kind == "sleep":
            end = time.time() + float(arg)
            while time.time() < end and read_some(end):
                pass
        elif kind == "wait":
            pattern = re.compile(arg.encode(), re.S)
            deadline = time.time() + TIMEOUT
            while True:
                m = pattern.search(bytes(out), mark)
                if m:
                    mark = m.end()
                    break
                if time.time() > deadline or not read_some(deadline):
                    sys.stderr.write("pty_session: timed out waiting for %r\n" % arg)
                    failed = True
                    break
            if failed:
                break
        else:
            sys.stderr.write("pty_session: unknown action %r\n" % action)
            failed = True
            break

    deadline = time.time() + TIMEOUT
    status = None
    while status is None:
        done, st = os.waitpid(pid, os.WNOHANG)
        if done:
            status = st
            break
        if time.time() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            failed = True
            break
        read_some(time.time() + 0.05)
    while read_some(time.time() + 0.05):  # what is left in the terminal
        if not select.select([fd], [], [], 0)[0]:
            break
    os.close(fd)
    sys.stdout.buffer.write(bytes(out))
    sys.stdout.flush()
    if failed:
        sys.exit(124)
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main()

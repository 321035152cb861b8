#!/usr/bin/env python3
"""Resource use of one server's whole process tree, read from /proc.

The tree of ROOT is ROOT, every process in ROOT's process group, and every
descendant of any of these (by the ppid field of /proc/PID/stat): a server
that forks workers, a supervisor that spawns daemons (Postfix's master), or
a delivery agent that forks per message are all counted.

    proctree.py cpu ROOT
        Prints the CPU seconds (user + system) the tree has used: the sum of
        utime + stime + cutime + cstime over its live processes. A child
        that exits and is reaped adds its times (and its reaped children's)
        to its parent's cutime/cstime, so the difference between two
        readings is the CPU the server used in between, as long as ROOT
        lives.

    proctree.py pss ROOT OUT STOP TIMEOUT
        Every 100 ms sums Pss (/proc/PID/smaps_rollup) over the tree and
        writes the largest sum seen so far (KiB) to OUT, until the file STOP
        exists or TIMEOUT seconds have passed.
"""
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def stat_fields(pid):
    """Fields of /proc/PID/stat after the command name (index 0 = state)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def tree(root):
    """{pid: fields} for the processes of ROOT's tree."""
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            procs[int(name)] = stat_fields(name)
        except (OSError, IndexError):
            continue
    # fields[1] = ppid, fields[2] = pgrp
    members = {pid for pid, f in procs.items() if pid == root or int(f[2]) == root}
    children = {}
    for pid, f in procs.items():
        children.setdefault(int(f[1]), []).append(pid)
    todo = list(members)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in members:
                members.add(child)
                todo.append(child)
    return {pid: procs[pid] for pid in members}


def cpu_seconds(root):
    total = 0
    for fields in tree(root).values():
        # utime, stime, cutime, cstime are stat fields 14-17 (1-based, with
        # pid and comm): indices 11-14 here.
        total += sum(int(x) for x in fields[11:15])
    return total / TICK


def pss_kib(root):
    total = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def main():
    cmd = sys.argv[1]
    root = int(sys.argv[2])
    if cmd == "cpu":
        print("%.3f" % cpu_seconds(root))
    elif cmd == "pss":
        out, stop, limit = sys.argv[3], sys.argv[4], float(sys.argv[5])
        peak = 0
        deadline = time.monotonic() + limit
        while not os.path.exists(stop) and time.monotonic() < deadline:
            peak = max(peak, pss_kib(root))
            with open(out + ".tmp", "w") as f:
                f.write(str(peak))
            os.replace(out + ".tmp", out)
            time.sleep(0.1)
    else:
        sys.exit(f"proctree.py: unknown command {cmd}")


if __name__ == "__main__":
    main()

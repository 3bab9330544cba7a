"""Summarize a py-spy ``--format raw --threads --idle`` recording (collapsed stacks): where each
thread of a worker spent its wall-clock time, by function (inclusive), line numbers folded."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame(text: str) -> str:
    m = FRAME.match(text.strip())
    if not m:
        return text.strip()
    file = m.group("file")
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m.group('func')} ({file})"


def summarize(path: Path, top: int = 25) -> str:
    threads: Counter[str] = Counter()
    inclusive: dict[str, Counter[str]] = {}
    leaf: dict[str, Counter[str]] = {}
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        thread = frames[0] if frames[0].startswith(("thread", "process")) else "all"
        body = frames[1:] if thread != "all" else frames
        if body and body[0].startswith("thread"):
            thread, body = body[0], body[1:]
        total += count
        threads[thread] += count
        seen = set()
        for f in body:
            name = _frame(f)
            if name not in seen:
                inclusive.setdefault(thread, Counter())[name] += count
                seen.add(name)
        if body:
            leaf.setdefault(thread, Counter())[_frame(body[-1])] += count
    out = [f"{total} samples in {len(threads)} threads ({path})"]
    for thread, n in threads.most_common():
        if n < total * 0.02:
            continue
        out.append(f"\n== {thread}: {n} samples ({n / total:.0%} of all)")
        out.append("  inclusive:")
        for name, c in inclusive.get(thread, Counter()).most_common(top):
            out.append(f"    {c / n:6.1%}  {name}")
        out.append("  leaf (self):")
        for name, c in leaf.get(thread, Counter()).most_common(10):
            out.append(f"    {c / n:6.1%}  {name}")
    return "\n".join(out)

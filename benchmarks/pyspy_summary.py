"""Summarise py-spy raw (collapsed) stacks: busy samples by leaf frame and by function.

    python benchmarks/pyspy_summary.py results/py-spy-kai-200.txt
"""
import sys, collections, re
self_c = collections.Counter(); incl = collections.Counter(); total = 0
for line in open(sys.argv[1]):
    stack, _, n = line.rstrip().rpartition(" ")
    try: n = int(n)
    except ValueError: continue
    frames = stack.split(";")
    # drop idle: threads waiting in select/wait/sleep
    leaf = frames[-1]
    if re.search(r"\b(wait|select|sleep|_wait_for_tstate_lock|acquire|join|poll|read \(socket|recv_into|accept)\b", leaf.split(" (")[0]):
        continue
    total += n
    self_c[leaf] += n
    seen = set()
    for f in frames:
        key = re.sub(r":\d+\)$", ")", f)
        if key not in seen:
            incl[key] += n; seen.add(key)
print("busy samples", total)
print("-- top self")
for f, n in self_c.most_common(15): print(f"{100*n/total:5.1f}% {f[:150]}")
print("-- top inclusive (functions)")
for f, n in incl.most_common(45): print(f"{100*n/total:5.1f}% {f[:150]}")

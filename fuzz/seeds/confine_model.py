#!/usr/bin/env python3
"""Writes the seeds of the fuzz target confine_model (fuzz/corpus/confine_model/).

Each seed is a short story of the agent's file operations, spelled with the target's own
tables: the input format is described at the top of fuzz/fuzz_targets/confine_model.rs, and
COMPONENTS, TARGETS and OPS here must list what its tables list, in the same order (were they
to drift apart, the seeds would still be valid inputs, only other stories).

    python3 fuzz/seeds/confine_model.py
"""
import os

COMPONENTS = ["a", "b", "..", ".", "parent", "/", "x/../..", "pre-1"]
# The last target is "<temporary root>/etc", which the target builds at run time.
TARGETS = ["../pre-1", "..", ".", "a", "../../m-2", "../../etc", "../../../etc", "../../../../etc", "ABS"]
OPS = ["open", "dir", "create_new", "remove", "symlink"]
NO_PLANT = 255


def path(comps):
    assert 1 <= len(comps) <= 4
    return bytes([len(comps) - 1] + [COMPONENTS.index(c) for c in comps])


def seed(plant, ops):
    out = bytes([NO_PLANT if plant is None else TARGETS.index(plant)])
    for op, *args in ops:
        out += bytes([OPS.index(op)])
        if op == "symlink":
            target, comps = args
            out += bytes([TARGETS.index(target)]) + path(comps)
        else:
            (comps,) = args
            out += path(comps)
    return out


SEEDS = {
    # What CRIU's rounds do: a page file, a directory, its parent link (twice: the same link
    # again is fine), a file next to it, a partial file removed.
    "criu_round": seed(None, [
        ("create_new", ["pre-1", "a"]),
        ("dir", ["b"]),
        ("symlink", "../pre-1", ["b", "parent"]),
        ("create_new", ["b", "a"]),
        ("symlink", "../pre-1", ["b", "parent"]),
        ("remove", ["pre-1", "a"]),
    ]),
    # A link to a sibling migration, then writes through it.
    "link_out": seed(None, [
        ("symlink", "../../m-2", ["a", "parent"]),
        ("create_new", ["a", "parent", "b"]),
        ("dir", ["a", "parent", "b"]),
        ("remove", ["a", "parent", "a"]),
        ("open", ["a", "parent"]),
    ]),
    # An absolute link to the decoy etc, and a link inside that must not be walked through.
    "abs_link": seed(None, [
        ("symlink", "ABS", ["a", "parent"]),
        ("dir", ["a", "parent", "b"]),
        ("create_new", ["a", "parent", "a"]),
        ("symlink", "../pre-1", ["b", "parent"]),
        ("create_new", ["b", "parent", "a"]),
    ]),
    # Up and out by "..", empty components, an absolute path.
    "dot_dot": seed(None, [
        ("create_new", ["..", "a"]),
        ("dir", ["x/../..", "a"]),
        ("create_new", ["a", "..", "..", "b"]),
        ("dir", ["/", "a"]),
        ("create_new", ["a", "/", "b"]),
        ("dir", ["a", ".."]),
        ("open", [".."]),
    ]),
    # A link left in the migration directory itself, out to the decoy etc.
    "planted": seed("../../../etc", [
        ("create_new", ["parent", "a"]),
        ("open", ["parent"]),
        ("dir", ["parent"]),
        ("open", ["parent", "."]),
        ("remove", ["parent"]),
        ("create_new", ["parent"]),
    ]),
    # A confinement opened beneath the migration directory, then ".." from there.
    "nested": seed(None, [
        ("dir", ["a", "b"]),
        ("open", ["a"]),
        ("create_new", ["b", "a"]),
        ("create_new", ["..", "b"]),
        ("symlink", "..", ["b", "parent"]),
        ("dir", ["b", "parent", "a"]),
    ]),
}

out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus", "confine_model")
os.makedirs(out_dir, exist_ok=True)
for name, data in SEEDS.items():
    with open(os.path.join(out_dir, name + ".bin"), "wb") as f:
        f.write(data)

"""Which way an op call went, for the tests of stseq.ops._autograd's eager paths: the autograd
graph's node names, and the Python functions a call runs."""

import sys


def graph_names(tensor):
    """Class names of every node of ``tensor``'s autograd graph."""
    names, stack, seen = set(), [tensor.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return names


def python_functions_called(fn):
    """Names of the Python functions that run during fn()."""
    names = set()

    def profile(frame, event, arg):
        if event == "call":
            names.add(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return names

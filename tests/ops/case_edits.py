"""Edits of an op's keyword arguments for the bad-input tables of the op tests: each returns a
function that changes a case dict in place (cloning the tensor it writes into, so the shared
inputs stay intact)."""


def set_element(name, index, value):
    """case[name][index] = value, on a clone of case[name]."""
    def change(case):
        case[name] = case[name].detach().clone()
        case[name][index] = value
    return change


def replace(name, value):
    """case[name] = value, or value(case) when value is callable."""
    def change(case):
        case[name] = value(case) if callable(value) else value
    return change

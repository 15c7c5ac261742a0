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


def with_value(name, value):
    """A new case with case[name] = value, or value(case) when value is callable (the fuzz
    suites' mutations: the drawn case stays intact)."""
    return lambda case: dict(case, **{name: value(case) if callable(value) else value})


def overflowing_span(first, later, where):
    """(edit, message) of int64 timestamps that stay non-decreasing but whose gap passes
    2^63 - 1 s: -2^62 at index ``first``, 2^62 + 1 at index ``later``; ``where`` as the error
    words the place of the second (a regex)."""
    def change(case):
        set_element("timestamps", first, -2**62)(case)
        set_element("timestamps", later, 2**62 + 1)(case)
    return change, (r"span at most 2\^63 - 1 s within a sequence \(their gaps are int64\); "
                    rf"{where} has 4611686018427387905")


def beyond_float64_seconds(index, where):
    """(edit, message) of float64 timestamps set to 2^53 + 2 s at ``index``, where float64 no
    longer resolves one second."""
    def change(case):
        replace("timestamps", case["timestamps"].double())(case)
        set_element("timestamps", index, 2.0**53 + 2)(case)
    return change, (r"within \+-2\^53 s, where float64 still resolves one second; "
                    rf"{where}")

"""Autograd of the native recurrent ops, registered once and called without torch.library's
per-call Python cost in eager mode.

:func:`register_autograd` registers an op's ``setup_context`` and ``backward`` with
``torch.library.register_autograd`` (what ``torch.compile`` and opcheck use) and builds the two
eager ways to call it that :func:`eager_op` hands out:

- with gradients: a plain ``torch.autograd.Function`` with the same ``setup_context`` and
  ``backward``. torch.library's registered path costs about 0.1 ms of Python per call
  (``fill_defaults`` rebuilds the schema's argument list for every argument), a third of an
  LSTM layer's training forward at B = 1, H = 64 (issue 17).
- without: the op called below the Autograd dispatch key. The registered autograd is a Python
  kernel that runs on every call the Autograd key reaches, under no_grad too, only to find
  nothing to record and call the op below autograd (torch.inference_mode skips it).

Both give the registered path's results bitwise (tests/ops/test_rnn.py, test_time_rnn.py).
"""

import torch

_DIFFERENTIABLE, _BELOW = {}, {}  # op name -> callable


def register_autograd(name, backward, *, setup_context):
    """``torch.library.register_autograd("stseq::<name>", ...)`` plus the eager variants.

    Example::

        register_autograd("lstm", backward_lstm, setup_context=setup_lstm)
    """
    torch.library.register_autograd(f"stseq::{name}", backward, setup_context=setup_context)
    op = getattr(torch.ops.stseq, name).default

    def forward(ctx, *inputs):
        # grad mode is off inside forward, but the Autograd key would still reach the registered
        # Python autograd kernel (about 25 us per call before it calls the kernel below it)
        with torch._C._AutoDispatchBelowAutograd():
            output = op(*inputs)
        setup_context(ctx, inputs, output)
        return output

    # named after the op: its graph nodes are "<name>_eagerBackward"
    function = type(f"{name}_eager", (torch.autograd.Function,),
                    {"forward": staticmethod(forward), "backward": staticmethod(backward)})
    _DIFFERENTIABLE[name] = function.apply

    def below(*args):
        if torch.is_inference_mode_enabled():  # autograd's keys are already excluded
            return op(*args)
        with torch._C._AutoDispatchBelowAutograd():
            return op(*args)

    _BELOW[name] = below


def eager_op(name, needs_grad):
    """The callable that runs ``torch.ops.stseq.<name>`` with the registered autograd's
    semantics: under torch.compile the op itself; eagerly, when autograd will call its backward
    (``needs_grad``), the plain autograd.Function, else the op below autograd.

    Example::

        out, h, c, gates, cells = eager_op("lstm", keep)(data, h0, c0, ...)
    """
    if torch.compiler.is_compiling():
        return getattr(torch.ops.stseq, name).default
    return (_DIFFERENTIABLE if needs_grad else _BELOW)[name]

"""Triton kernels (forward and backward) of the ops that have them.

Importing a kernel module needs ``triton``; ``stseq.ops`` imports them only when a Triton
backend runs. On a machine without a GPU they run through Triton's interpreter when
``TRITON_INTERPRET=1`` is set before the import (the tests do this).
"""

"""Benchmarks of the kit against the physical limit and the field's figures (issue 6).

``make bench`` (``python -m benchmarks.run``) measures every figure side by side
in one run on the same generated clips and prints one table; ``docs/benchmarks.md``
says what each row measures and why its reference is the limit or the peer.
"""

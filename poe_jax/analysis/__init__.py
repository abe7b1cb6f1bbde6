"""Analysis: what a run's stored episodes say, with no JAX in it.

====================  ============================================================
module                owns
====================  ============================================================
:mod:`.stats`         per-seed aggregation, paired tests against ``frozen``, Holm families
:mod:`.claims`        the study's claims, one registered test each
:mod:`.offpolicy`     off-policy scores with the actor's critic (a step of its own:
                      ``poe-jax score``; the report reads what it stored)
:mod:`.report`        ``analyze(run) -> Analysis`` and ``render(Analysis)``
:mod:`.styles`        one plot style per rule, shared by every figure
====================  ============================================================
"""

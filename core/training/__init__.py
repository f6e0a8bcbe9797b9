"""Training: ``engine`` turns a run's settings into files (``training.py``'s one call), ``solver`` is the one loop
for every model kind (``resume`` what its checkpoints record of a run, and taking one back), ``optim`` and
``torch_optim`` the two ways a step updates a model (CS231n rules on numpy gradients, AdamW on autograd), ``recipes``
each kind's training defaults, ``scst`` self-critical training, ``classic`` CS231n's two captioning solvers as
adapters over the one loop.
Imports models, decoding, evaluation and everything below."""

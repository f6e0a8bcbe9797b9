"""Training: ``engine`` turns a run's settings into files (``training.py``'s one call), ``solver`` is the one loop
for every model kind, ``optim`` and ``torch_optim`` the two ways a step updates a model (CS231n rules on numpy
gradients, AdamW on autograd), ``recipes`` each kind's training defaults, ``scst`` self-critical training.
Imports models, decoding, evaluation and everything below."""

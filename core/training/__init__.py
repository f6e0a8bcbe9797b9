"""Training: ``engine`` turns a run's settings into files (``training.py``'s one call), ``solver`` is the one loop
for every model kind, ``updaters`` the two ways a step updates a model (numpy rules, torch autograd)."""

"""The results study (``results.py``): trains every model kind with its defaults, evaluates each on the held-out
split beside the baselines, and writes the tables. The top floor of ``core``: it may import anything below."""

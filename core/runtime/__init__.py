"""The ground floor, plumbing every other package uses: errors, atomic file writing and locks, devices, CLI helpers,
checkpoint files, plots and the torch.distributed process group. Imports nothing else of the project."""

"""Image captioning from scratch: numpy RNN/LSTM/attention-LSTM and a torch Transformer decoder over CNN features.

The packages, lowest floor first; a module imports only from its own floor or below (tests/test_architecture.py):
  runtime     errors, atomic files and locks, devices, CLI helpers, checkpoints, plots, the torch.distributed group
  data        the on-disk layout, HDF5 feature stores, the CS231n loader, vocabulary, images, downloads
  shapes_world  the generated worlds (default and hard): their words, scenes, rendering, caption templates
  layers      numpy RNN/LSTM/attention-LSTM layers with hand-written backward passes; torch Transformer layers
  features    image encoders (VGG16, the shapes CNN) and PCA
  model       the captioning models and the registry of model kinds
  datasets    dataset builders (shapes world, COCO, your own images) and which folder a command reads
  evaluation  COCO metrics, CIDEr-D, grounding, relation probe, attention correctness, baselines, the evaluation loop
  training    the one training loop, the two updaters, per-kind recipes, self-critical training
  inference   captioning with a trained model: galleries, attention maps, your own images, evaluation runs
  results     the results study: trains and evaluates every model kind and writes the tables
The top-level modules are the classic CS231n import paths (``rnn_layers``, ``transformer_layers``, ``coco_utils``,
``optim``, ``image_utils``, ``captioning_solver``, ``captioning_solver_transformer``), thin re-exports of the
packages, and ``decoding`` (greedy, beam search and sampling over one step interface).
"""

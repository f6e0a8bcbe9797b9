"""Image captioning from scratch: numpy RNN/LSTM and a torch Transformer decoder over CNN features."""

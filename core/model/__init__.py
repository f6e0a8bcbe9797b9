"""Captioning models: numpy CaptioningRNN (rnn, lstm) and CaptioningAttLSTM, torch CaptioningTransformer, and the
registry of model kinds (``registry``: class, framework, config, build, load). Imports layers, data and below."""

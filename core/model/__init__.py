"""Captioning models: numpy CaptioningRNN (rnn, lstm) and torch CaptioningTransformer."""

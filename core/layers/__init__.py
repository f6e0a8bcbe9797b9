"""Layers with their backward passes: numpy RNN/LSTM (``rnn``), the affine maps, word embedding and softmax loss
around them (``affine``), the attention LSTM's steps (``att_step``) and packed sequence (``att_lstm``), packing
and dropout; and the torch Transformer's attention (``attention``) and decoder layer (``transformer``). Imports
only ``runtime``."""

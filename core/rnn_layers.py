"""The classic CS231n import path of the numpy recurrent layers: ``from core.rnn_layers import lstm_forward``.

The layers live in ``core.layers.rnn`` (the RNN and LSTM) and ``core.layers.affine`` (the affine maps, the word
embedding and the softmax loss around them); this module re-exports every name CS231n's ``rnn_layers.py`` has.
"""
from core.layers.affine import (
                                affine_backward,
                                affine_forward,
                                temporal_affine_backward,
                                temporal_affine_forward,
                                temporal_softmax_loss,
                                word_embedding_backward,
                                word_embedding_forward,
)
from core.layers.rnn import (
                                lstm_backward,
                                lstm_forward,
                                lstm_step_backward,
                                lstm_step_forward,
                                rnn_backward,
                                rnn_forward,
                                rnn_step_backward,
                                rnn_step_forward,
                                sigmoid,
)

__all__ = ["affine_forward", "affine_backward", "rnn_step_forward", "rnn_step_backward", "rnn_forward",
           "rnn_backward", "word_embedding_forward", "word_embedding_backward", "sigmoid", "lstm_step_forward",
           "lstm_step_backward", "lstm_forward", "lstm_backward", "temporal_affine_forward",
           "temporal_affine_backward", "temporal_softmax_loss"]

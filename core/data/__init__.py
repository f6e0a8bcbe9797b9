"""The ground floor: the on-disk layout, the vocabulary, the HDF5 feature store, the CS231n loader and minibatch
sampler, image decoding and the download/extract utility. Nothing here imports features, models, decoding or
scripts."""
